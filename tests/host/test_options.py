"""One meaning per option across kpctl: every short option and every long name, in every
command, stands for the same parameter with the same help (what a command does with it
beyond that is in the command's own help). Renamed spellings still work for a release,
with a note on stderr."""
from __future__ import annotations

from collections import defaultdict

import click
import pytest
from click.testing import CliRunner

from kpctl.cli.main import cli
from kpctl.cli.output import Renamed
from kpctl.cli.reference import commands


def command_at(path: tuple[str, ...]) -> click.Command:
    command: click.Command = cli
    for word in path:
        assert isinstance(command, click.Group)
        command = command.commands[word]
    return command


def meaning(option: click.Option) -> tuple[object, ...]:
    """What an option stands for: its parameter, its spellings, its kind and its help."""
    return (option.name, tuple(sorted(option.opts + option.secondary_opts)), option.is_flag,
            type(option.type).__name__, option.help)


def test_every_short_option_and_long_name_has_one_meaning_across_kpctl() -> None:
    meanings: dict[str, dict[tuple[object, ...], list[str]]] = defaultdict(lambda: defaultdict(list))
    for path in [(), *commands()]:
        for param in command_at(path).params:
            if isinstance(param, click.Option):
                for spelling in param.opts + param.secondary_opts:
                    meanings[spelling][meaning(param)].append(" ".join(("kpctl", *path)))
    # Each spelling of several meanings, with each meaning's parameter, help and commands.
    several = {spelling: [(m[0], m[-1], where) for m, where in found.items()]
               for spelling, found in meanings.items() if len(found) > 1}
    assert several == {}
    assert len(meanings) > 40  # the walk reached every command's options


def test_renamed_spellings_are_no_options_of_their_command() -> None:
    for path in commands():
        command = command_at(path)
        if isinstance(command, Renamed):
            spellings = {s for p in command.params for s in getattr(p, "opts", [])}
            assert not set(command.renamed) & spellings
            assert set(command.renamed.values()) <= spellings


@click.command(cls=Renamed, renamed={"-n": "--calls", "--max-probes": "--max-functions"})
@click.option("--calls", type=int)
@click.option("--max-functions", type=int)
@click.argument("rest", nargs=-1)
def respelled(calls: int | None, max_functions: int | None, rest: tuple[str, ...]) -> None:
    click.echo(f"{calls} {max_functions} {list(rest)}")


@pytest.mark.parametrize(("args", "out", "notes"), [
    (["-n", "5"], "5 None []", ["-n"]),
    (["-n5", "--max-probes=7"], "5 7 []", ["-n", "--max-probes"]),
    (["--max-probes", "7", "-n", "1", "-n", "2"], "2 7 []", ["--max-probes", "-n"]),
    (["--calls", "3", "--", "-n", "--max-probes"], "3 None ['-n', '--max-probes']", []),
])
def test_an_old_spelling_works_with_one_note_on_stderr(args: list[str], out: str, notes: list[str]) -> None:
    result = CliRunner().invoke(respelled, args, prog_name="demo")
    assert (result.exit_code, result.stdout) == (0, out + "\n")
    new = {"-n": "--calls", "--max-probes": "--max-functions"}
    assert result.stderr == "".join(f"kpctl: demo {old} is now {new[old]}; {old} goes in the next release\n" for old in notes)


@pytest.mark.parametrize(("args", "note"), [
    (["bench", "-n", "0"], "kpctl: bench -n is now --calls; -n goes in the next release\n"),
    (["bench", "-r0"], "kpctl: bench -r is now --runs; -r goes in the next release\n"),
    (["inspect", "vfs_read", "-n", "0"], "kpctl: inspect -n is now --instructions; -n goes in the next release\n"),
    (["count", "vfs_read", "--max-probes", "0"], "kpctl: count --max-probes is now --max-functions; --max-probes goes in the next release\n"),
])
def test_kpctls_renamed_options_still_parse_as_the_new_ones(args: list[str], note: str) -> None:
    result = CliRunner().invoke(cli, args, prog_name="kpctl")
    # 0 is out of range: click's usage error names the new spelling, after the note.
    new = note.split(" is now ")[1].split(";")[0]
    assert result.exit_code == 2 and result.stderr.startswith(note) and f"'{new}'" in result.stderr
