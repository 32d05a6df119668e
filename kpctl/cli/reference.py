"""docs/cli.md, kpctl's command reference, made from the commands' own --help (as
sqlite-utils does with cog): `python3 -m kpctl.cli.reference > docs/cli.md`, or
`make docs`. A host test keeps the file in step with the code."""
from __future__ import annotations

from collections.abc import Iterator

import click
from click.testing import CliRunner

from kpctl.cli.main import cli

WIDTH = 88  # the help text's width in the file, whatever the terminal


def commands(group: click.Group = cli, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every command and subcommand, as the words that name it: ("kmod", "load")."""
    for name in sorted(group.commands):
        command = group.commands[name]
        yield (*path, name)
        if isinstance(command, click.Group):
            yield from commands(command, (*path, name))


def help_text(path: tuple[str, ...]) -> str:
    result = CliRunner().invoke(cli, [*path, "--help"], prog_name="kpctl", terminal_width=WIDTH)
    if result.exit_code != 0:
        raise RuntimeError(f"kpctl {' '.join(path)} --help failed: {result.output}")
    return result.output


def render() -> str:
    parts = [
        "# kpctl command reference\n",
        "Generated from each command's `--help` by `make docs` (kpctl/cli/reference.py); "
        "do not edit by hand.\n",
    ]
    for path in [(), *commands()]:
        parts.append(f"## kpctl {' '.join(path)}".rstrip() + "\n")
        parts.append(f"```\n{help_text(path)}```\n")
    return "\n".join(parts)


if __name__ == "__main__":
    print(render(), end="")
