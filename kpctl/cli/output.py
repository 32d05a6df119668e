"""What every command shares: library errors as click errors, JSON and table output."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from kpctl.errors import KpctlError

F = TypeVar("F", bound=Callable[..., Any])


class KpctlFailure(click.ClickException):
    """A KpctlError as click prints it: ``Error: message``, then the hint lines."""

    def __init__(self, error: KpctlError) -> None:
        super().__init__(error.message)
        self.hint = error.hint

    def format_message(self) -> str:
        return f"{self.message}\n{self.hint}" if self.hint else self.message


class KpctlGroup(click.Group):
    """A group whose commands' KpctlErrors become one ``Error: ...`` line and exit 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KpctlError as e:
            raise KpctlFailure(e) from e


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(f)


def print_json(data: object) -> None:
    import json

    click.echo(json.dumps(data, indent=2))


def print_table(rows: Sequence[dict[str, Any]], headers: Sequence[str]) -> None:
    from tabulate import tabulate

    click.echo(tabulate([[row[h] for h in headers] for row in rows], headers=[h.upper() for h in headers]))
