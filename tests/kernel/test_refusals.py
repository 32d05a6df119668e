"""Random and mutated probe specs through kpctl add against a real kernel (issue 23):
every refusal is one error line, changes nothing in the kernel, and kpctl's own
refusals (exit 2) never reach it; what the kernel refuses (exit 1) is its own message.

The CLI runs in-process (Python starts slowly in an emulated guest); the specs come from
a fixed seed, so a failure names a spec that fails again.
"""
from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import require

from kpctl.cli.main import cli
from kpctl.limits import MAX_DEREF_DEPTH
from kpctl.tracefs import Tracefs, find_tracefs

# Specs the kernels take, each an argv after `kpctl add`; the mutations start from them.
VALID = [
    ["vfs_read", "size=$arg3:u64"],
    ["vfs_read", "buf=+0($arg2):x8[4]", "pos=+0(+8($stack)):s64"],
    ["--ret", "vfs_read", "ret=$retval:s64"],
    ["vfs_read", "bits=$arg3:b4@2/32", "c=$comm", "one=\\1234"],
    ["vfs_read", "s=\\\"hello\"", "st=$stack0:x64", "sp=$stack"],
    ["vfs_read%return", "$retval"],
]
# What issue 23 found, and the kernel's own refusals: both must leave it as it was.
KNOWN_BAD = [
    ["vfs_read", "x=$arg1:s99"], ["vfs_read", "$arg99999"], ["vfs_read", "x=$arg1", "x=$arg2"],
    ["vfs_read", *[f"a{i}=$arg1" for i in range(129)]], ["vfs_read", "$retval"], ["vfs_read", "x=$comm:u32"],
    ["vfs_read", "s=\\\"x\":u8"], ["-g", "../x", "vfs_read"], ["--name", "n" * 65, "vfs_read"],
    ["vfs_read", "x=$arg1:x8[1025]"], ["vfs_read", "x=$arg1:b33@0/32"], ["vfs_read", "x=+0($arg1"],
    ["vfs_read", "x=%nosuchreg"], ["no_such_function_kpctl"], ["vfs_read+1"], ["vfs_read", "x=$arg1:string"],
    ["vfs_read", "x=" + "9" * 5000], ["vfs_read+" + "1" * 5000], ["--maxactive", "99999", "--ret", "vfs_read"],
]
MUTATED = 200
ALPHABET = "$%+-()@:=\\\"[]/*.0123456789abrsuxg_ ,"


def mutate(rng: random.Random, argv: list[str]) -> list[str]:
    """argv with one to three characters of one argument inserted, deleted or replaced:
    mostly a fetch argument (a target the kernel refuses costs a read of kallsyms)."""
    argv = list(argv)
    first_arg = (2 if argv[0] == "--ret" else 1)  # after the target
    i = rng.randrange(len(argv)) if rng.random() < 0.15 or first_arg >= len(argv) else rng.randrange(first_arg, len(argv))
    text = argv[i]
    for _ in range(rng.randint(1, 3)):
        at = rng.randint(0, len(text))
        action = rng.choice(("insert", "delete", "replace"))
        if action == "insert" or not text:
            text = text[:at] + rng.choice(ALPHABET) + text[at:]
        elif action == "delete":
            text = text[:at] + text[at + 1:]
        else:
            text = text[:at] + rng.choice(ALPHABET) + text[at + 1:]
    argv[i] = text
    return argv


def specs() -> list[list[str]]:
    rng = random.Random(23)
    return KNOWN_BAD + [mutate(rng, rng.choice(VALID)) for _ in range(MUTATED)]


@pytest.fixture(scope="module")
def tracefs() -> Tracefs:
    require(Path("/sys/kernel/tracing/kprobe_events").exists(), "needs kprobe_events (CONFIG_KPROBE_EVENTS)")
    return Tracefs(find_tracefs())


def kernel_state(tracefs: Tracefs) -> tuple[str, ...]:
    """What a refused add must not change: probes, dynamic events, kpctl's instance's events."""
    events = tracefs.path("instances/kpctl/events/kpctl")
    return (tracefs.read("kprobe_events"), tracefs.read("dynamic_events"),
            " ".join(sorted(p.name for p in events.iterdir())) if events.is_dir() else "")


@pytest.fixture
def clean(tracefs: Tracefs) -> Iterator[None]:
    assert CliRunner().invoke(cli, ["list", "--json"]).output.strip() == "[]", "kpctl probes were left before"
    yield
    CliRunner().invoke(cli, ["rm", "--all"])


def test_every_refused_spec_is_one_error_line_and_leaves_the_kernel_as_it_was(tracefs: Tracefs, clean: None) -> None:
    runner = CliRunner()
    refused = {1: 0, 2: 0}
    for argv in specs():
        before = kernel_state(tracefs)
        errors_before = tracefs.read("error_log")  # its last 8 entries: compared whole
        result = runner.invoke(cli, ["add", *argv])
        if result.exit_code == 0:  # a mutation the kernel takes is fine: it goes again
            removed = runner.invoke(cli, ["rm", "--all"])
            assert removed.exit_code == 0, (argv, removed.output)
            continue
        lines = result.output.splitlines()
        assert result.exit_code in refused, (argv, result.output)
        assert result.exception is None or isinstance(result.exception, SystemExit), (argv, result.output)
        # One error line; before it only kpctl's notes or click's usage lines, after it the hint.
        errors = [i for i, line in enumerate(lines) if line.startswith("Error: ")]
        assert len(errors) == 1, (argv, result.output)
        assert all(not line or line.startswith(("kpctl: ", "Usage: ", "Try ")) for line in lines[:errors[0]]), (
            argv, result.output)
        assert len(result.output) < 2000 and len(lines) <= 6, (argv, result.output)
        assert kernel_state(tracefs) == before, argv
        if result.exit_code == 2:  # kpctl's own refusal: the kernel was not asked
            assert tracefs.read("error_log") == errors_before, (argv, result.output)
        refused[result.exit_code] += 1
    # The seed makes both kinds: kpctl's own refusals and the kernel's.
    assert refused[1] >= 5 and refused[2] >= 50, refused


def test_the_deepest_dereference_kpctl_allows_is_one_the_kernel_takes(tracefs: Tracefs, clean: None) -> None:
    deepest = "x=" + "+0(" * MAX_DEREF_DEPTH + "$stack" + ")" * MAX_DEREF_DEPTH
    result = CliRunner().invoke(cli, ["add", "vfs_read", deepest, "--disabled"])
    assert result.exit_code == 0, result.output
    assert CliRunner().invoke(cli, ["rm", "vfs_read"]).exit_code == 0
    deeper = "x=" + "+0(" * (MAX_DEREF_DEPTH + 1) + "$stack" + ")" * (MAX_DEREF_DEPTH + 1)
    assert CliRunner().invoke(cli, ["add", "vfs_read", deeper]).exit_code == 2
