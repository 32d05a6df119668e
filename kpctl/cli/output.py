"""What every command shares: library errors as click errors, JSON and table output."""
from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from kpctl.errors import KpctlError, UsageError, clipped

F = TypeVar("F", bound=Callable[..., Any])


# The most of a message or of a hint's line the CLI prints.
_MESSAGE_LIMIT = 1000


class KpctlFailure(click.ClickException):
    """A KpctlError as click prints it: ``Error: message``, then the hint lines."""

    def __init__(self, error: KpctlError) -> None:
        # Bounded whatever the error quotes: a message is one line; a hint, lines (a compiler's last 40).
        super().__init__(clipped(error.message, _MESSAGE_LIMIT))
        self.hint = "\n".join(clipped(line, _MESSAGE_LIMIT) for line in error.hint.splitlines()[:50]) if error.hint else None

    def format_message(self) -> str:
        return f"{self.message}\n{self.hint}" if self.hint else self.message


class KpctlUsageFailure(KpctlFailure):
    """A UsageError: exit status 2, as click's own usage errors."""
    exit_code = 2


_JSON_META = "kpctl.json"
VERBOSE_META = "kpctl.verbose"  # set by the group's -v: errors' details are shown
WIDE_META = "kpctl.wide"  # set by the group's --wide: tables' full lines on a terminal too


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
                if e.details and ctx.meta.get(VERBOSE_META):
                    click.echo(e.details.rstrip("\n"), err=True)
                raise (KpctlUsageFailure if isinstance(e, UsageError) else KpctlFailure)(e) from e
        except click.ClickException as e:
            # click quotes what was typed, 5,000 digits too: its message is bounded as ours.
            e.message = clipped(e.message, _MESSAGE_LIMIT)  # type: ignore[misc]
            if ctx.meta.get(_JSON_META):
                error, hint = (e.message, e.hint) if isinstance(e, KpctlFailure) else (e.format_message(), None)
                print_json({"error": error, "hint": hint, "exit_status": e.exit_code})
            raise


class Renamed(click.Command):
    """A command that still takes the old spellings of its renamed options, for one
    release, each with a note on stderr: renamed={"-n": "--calls"}. The old spellings
    are no options of the command (its --help and the one-meaning test see only the new
    ones); what was typed is respelled before click parses it, up to a "--". An old
    short option is one that takes a value: "-n5" is "--calls=5"."""

    def __init__(self, *args: Any, renamed: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.renamed = renamed

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        respelled: list[str] = []
        said: set[str] = set()
        for i, arg in enumerate(args):
            if arg == "--":
                respelled.extend(args[i:])
                break
            new = arg
            for old, now in self.renamed.items():
                if arg == old:
                    new = now
                elif old.startswith("--") and arg.startswith(old + "="):
                    new = now + arg[len(old):]
                elif not old.startswith("--") and arg.startswith(old) and len(arg) > len(old):
                    new = f"{now}={arg[len(old):]}"
                else:
                    continue
                if old not in said:
                    said.add(old)
                    click.echo(f"kpctl: {ctx.info_name} {old} is now {now}; {old} goes in the next release", err=True)
                break
            respelled.append(new)
        return super().parse_args(ctx, respelled)


class Seconds(click.FloatRange):
    """A positive, finite number of seconds: nan and inf are usage errors, not a
    ValueError in a poll loop."""
    name = "seconds"

    def __init__(self, low: float = 0, high: float | None = None) -> None:
        super().__init__(low, high, min_open=low == 0)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        import math

        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value} is not a finite number of seconds", param, ctx)
        return number


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True,
                        help="Print JSON instead of text (errors too, as an object on stdout).")(f)


def print_json(data: object) -> None:
    import json

    click.echo(json.dumps(data, indent=2))


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def table_width() -> int | None:
    """The width a table must fit: the terminal's (COLUMNS honoured) when stdout is one
    and --wide was not given; None (full lines) into a pipe or a file, or with --wide."""
    import shutil

    ctx = click.get_current_context(silent=True)
    if (ctx is not None and ctx.meta.get(WIDE_META)) or not stdout_is_terminal():
        return None
    return shutil.get_terminal_size().columns


WIDE_HELP = "Print tables whole on a terminal too, not wrapped to its width (a pipe always gets them whole)."


def _wide_given(ctx: click.Context, param: click.Parameter, wide: bool) -> None:
    if wide:
        ctx.meta[WIDE_META] = True


def wide_option(f: F) -> F:
    """--wide after a command that prints a table, as `kpctl --wide` before it."""
    return click.option("--wide", is_flag=True, expose_value=False, callback=_wide_given, help=WIDE_HELP)(f)


def print_table(rows: Sequence[dict[str, Any]], headers: Sequence[str]) -> None:
    """Every table kpctl prints: fitted to the terminal (long text columns wrapped), or
    full lines into a pipe and with --wide."""
    from kpctl.tables import render_table

    click.echo(render_table(rows, headers, table_width()))


def output_options(f: F) -> F:
    """--json and --format (--json is --format json), given to the command as one
    `output`: table, json or prometheus. Asking for two formats is a usage error."""
    @functools.wraps(f)
    def command(as_json: bool, output: str | None, **kwargs: Any) -> Any:
        if as_json and output not in (None, "json"):
            raise UsageError(f"--json and --format {output} ask for two formats: give one")
        return f(output="json" if as_json else output or "table", **kwargs)

    command = click.option("--format", "output", type=click.Choice(["table", "json", "prometheus"]),
                           help="How to print (default: table); prometheus is the Prometheus text format.")(command)
    return json_option(command)  # type: ignore[return-value]
