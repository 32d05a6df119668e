"""What every command shares: library errors as click errors, JSON and table output."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from kpctl.errors import KpctlError, UsageError

F = TypeVar("F", bound=Callable[..., Any])


class KpctlFailure(click.ClickException):
    """A KpctlError as click prints it: ``Error: message``, then the hint lines."""

    def __init__(self, error: KpctlError) -> None:
        super().__init__(error.message)
        self.hint = error.hint

    def format_message(self) -> str:
        return f"{self.message}\n{self.hint}" if self.hint else self.message


class KpctlUsageFailure(KpctlFailure):
    """A UsageError: exit status 2, as click's own usage errors."""
    exit_code = 2


_JSON_META = "kpctl.json"


class KpctlGroup(click.Group):
    """A group whose commands' KpctlErrors become one ``Error: ...`` line on stderr and
    exit status 2 or 1; under --json, these and click's own usage errors are also a JSON
    object on stdout, so that a pipe into jq gets the error rather than nothing."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # A usage error may come before --json is parsed (an unknown option): asked
        # for JSON is then what was typed, up to a "--".
        ctx.meta[_JSON_META] = "--json" in args[:args.index("--") if "--" in args else None]
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            try:
                return super().invoke(ctx)
            except KpctlError as e:
                raise (KpctlUsageFailure if isinstance(e, UsageError) else KpctlFailure)(e) from e
        except click.ClickException as e:
            if ctx.meta.get(_JSON_META):
                error, hint = (e.message, e.hint) if isinstance(e, KpctlFailure) else (e.format_message(), None)
                print_json({"error": error, "hint": hint, "exit_status": e.exit_code})
            raise


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True,
                        help="Print JSON instead of text (errors too, as an object on stdout).")(f)


def print_json(data: object) -> None:
    import json

    click.echo(json.dumps(data, indent=2))


def print_table(rows: Sequence[dict[str, Any]], headers: Sequence[str]) -> None:
    from tabulate import tabulate

    click.echo(tabulate([[row[h] for h in headers] for row in rows], headers=[h.upper() for h in headers]))


def format_option(f: F) -> F:
    """--format, beside --json (which is --format json)."""
    return click.option("--format", "output", type=click.Choice(["table", "json", "prometheus"]), default="table",
                        show_default=True, help="How to print: prometheus is the Prometheus text format.")(f)
