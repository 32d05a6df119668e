"""Bad input of every kind, fed to kpctl (issue 23). The rules it guards, whatever the
input: kpctl exits 0, 1 or 2, never with a traceback; a refusal is one ``Error:`` line
(and its hint), a few hundred bytes however large the input, and changes nothing; a
refusal comes at once, within the time and memory kpctl is given, whatever the file
(a FIFO, a device node, a YAML alias bomb, nesting ten thousand deep).

kpctl runs as a child process (bad_input_helpers.kpctl: 20 s, 1 GiB of address space)
against a fake kernel in a scratch directory, never the machine's; files kpctl must not
read nor replace are scratch FIFOs, device nodes and links. The pure parsers are
fuzzed in-process with hypothesis: what they raise is a KpctlError or nothing, and a
probe they return formats to a line that parses back to it."""
from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import yaml
from bad_input_helpers import (
    REFUSAL_LIMIT,
    VALID_FETCHARGS,
    VALID_GROUPS,
    VALID_NAMES,
    VALID_TARGETS,
    Run,
    argv_bytes,
    kpctl,
    make_kernel,
    mutated,
    snapshot,
    spec_text,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kpctl.errors import KpctlError
from kpctl.limits import MAX_MAXACTIVE
from kpctl.model import format_probe, parse_probe, probes_from_targets
from kpctl.probeset import MAX_SET_BYTES, ProbeSet, parse_probe_set

PURE = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SPAWNING = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                          HealthCheck.function_scoped_fixture])
MESSAGE_LIMIT = 1000  # characters of a parser's message and hint


@pytest.fixture
def kernel(tmp_path: Path) -> Path:
    return make_kernel(tmp_path / "kernel")


def assert_refused(run: Run, code: int = 2) -> None:
    """The rules of a refusal: the exit status, no traceback, one error line, bounded."""
    assert run.code == code, run.output
    assert "Traceback" not in run.output
    assert len(run.output.encode()) < REFUSAL_LIMIT, run.output[:300]
    assert sum(line.startswith("Error: ") for line in run.stderr.splitlines()) == 1, run.output


def refused(kernel: Path, *args: str, code: int = 2, stdin: bytes = b"") -> Run:
    """kpctl ARGS, refused by the rules, the fake kernel left exactly as it was."""
    before = snapshot(kernel)
    run = kpctl(kernel, *args, stdin=stdin)
    assert_refused(run, code)
    assert snapshot(kernel) == before
    return run


def scratch_device(path: Path, major: int, minor: int) -> Path:
    """A character device node at path (as /dev/zero is 1,5 and /dev/full 1,7), made in
    the test's own directory: the test never touches the machine's."""
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
    except PermissionError:
        pytest.skip("making a device node needs CAP_MKNOD")
    return path


# --- probe-set files ---------------------------------------------------------------

BOMB = "\n".join(["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
                 + [f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]" for a, b in zip("abcdefgh", "bcdefghi")]) + "\n"


def set_file(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "set.yaml"
    path.write_bytes(data)
    return path


class BadSet(NamedTuple):
    make: Callable[[Path], Path]  # builds the file in the test's directory
    says: str  # what the one error line says


BAD_SETS = {
    "larger than 1 MiB": BadSet(lambda t: set_file(t, b"# padding\n" * (2 * MAX_SET_BYTES // 10)), "larger than 1 MiB"),
    "a FIFO": BadSet(lambda t: (os.mkfifo(t / "fifo"), t / "fifo")[1], "not a regular file"),
    "a character device": BadSet(lambda t: scratch_device(t / "zero", 1, 5), "not a regular file"),
    "a directory": BadSet(lambda t: t, "not a regular file"),
    "a link to a FIFO": BadSet(lambda t: (os.mkfifo(t / "fifo"), os.symlink(t / "fifo", t / "link"), t / "link")[2],
                               "not a regular file"),
    "an alias bomb": BadSet(lambda t: set_file(t, BOMB.encode()), "aliases expanded"),
    "10,000 nested brackets": BadSet(lambda t: set_file(t, b"[" * 10_000), "nested more than"),
    "not UTF-8": BadSet(lambda t: set_file(t, b"name: x\nprobes:\n  - target: vfs_read\n    name: \xff\xfe\n"),
                        ":4: not UTF-8 text (byte 0xff)"),
    "a key given twice": BadSet(lambda t: set_file(t, b"name: x\nname: y\nprobes: []\n"), "'name': given twice"),
    "maxactive 99999": BadSet(
        lambda t: set_file(t, b"name: x\nprobes:\n  - target: vfs_read\n    kind: return\n    maxactive: 99999\n"),
        f"maxactive: must be an integer from 0 to {MAX_MAXACTIVE}, not 99999"),
    "a 100,000-character probe name": BadSet(
        lambda t: set_file(t, b"name: x\nprobes:\n  - target: vfs_read\n    name: " + b"n" * 100_000 + b"\n"),
        "invalid probe name"),
    "a 5,000-digit number": BadSet(
        lambda t: set_file(t, b"name: x\nprobes:\n  - target: vfs_read\n    kind: return\n    maxactive: "
                           + b"9" * 5000 + b"\n"), "a number 5000 characters long"),
    "a 5,000-digit fetch argument": BadSet(
        lambda t: set_file(t, b"name: x\nprobes:\n  - target: vfs_read\n    args: ['x=$arg1:b" + b"9" * 5000 + b"@0/32']\n"),
        "a number is 64 bits at most"),
    "a flat list of 1 MiB": BadSet(lambda t: set_file(t, b"[" + b"a," * (MAX_SET_BYTES // 2 - 1) + b"]"), "more than"),
}


@pytest.mark.parametrize("bad", BAD_SETS.values(), ids=BAD_SETS.keys())
def test_a_bad_set_file_is_refused_by_a_dry_run_in_one_line(kernel: Path, tmp_path: Path, bad: BadSet) -> None:
    run = refused(kernel, "apply", "--dry-run", "-f", str(bad.make(tmp_path)))
    assert bad.says in run.stderr


@pytest.mark.parametrize("bad", ["an alias bomb", "a 5,000-digit fetch argument"])
def test_a_bad_set_file_applied_for_real_changes_nothing(kernel: Path, tmp_path: Path, bad: str) -> None:
    refused(kernel, "apply", "-f", str(BAD_SETS[bad].make(tmp_path)))


def test_a_set_on_stdin_larger_than_1_mib_is_refused(kernel: Path) -> None:
    run = refused(kernel, "apply", "--dry-run", "-f", "-", stdin=b"# padding\n" * (2 * MAX_SET_BYTES // 10))
    assert "<stdin>: larger than 1 MiB" in run.stderr


def test_ten_thousand_nested_brackets_are_refused_in_exactly_one_line(kernel: Path, tmp_path: Path) -> None:
    run = refused(kernel, "apply", "--dry-run", "-f", str(BAD_SETS["10,000 nested brackets"].make(tmp_path)))
    assert run.stdout == "" and run.stderr.count("\n") == 1


def test_a_file_that_is_not_utf8_is_one_line_naming_the_file_and_line(kernel: Path, tmp_path: Path) -> None:
    path = BAD_SETS["not UTF-8"].make(tmp_path)
    run = refused(kernel, "apply", "--dry-run", "-f", str(path))
    assert run.stderr == f"Error: {path}:4: not UTF-8 text (byte 0xff)\n"


def test_a_file_that_is_not_utf8_under_json_is_a_json_error_on_stdout(kernel: Path, tmp_path: Path) -> None:
    path = BAD_SETS["not UTF-8"].make(tmp_path)
    run = refused(kernel, "apply", "--dry-run", "--json", "-f", str(path))
    assert json.loads(run.stdout) == {"error": f"{path}:4: not UTF-8 text (byte 0xff)", "hint": None, "exit_status": 2}


def test_the_alias_bomb_is_a_few_hundred_bytes() -> None:
    """What the refusal above is worth: 9**9 lols from this."""
    assert len(BOMB) < 450


def test_maxactive_beyond_the_kernels_limit_is_refused_on_the_command_line_as_in_a_file(kernel: Path) -> None:
    run = refused(kernel, "add", "--dry-run", "--ret", "--maxactive", "99999", "vfs_read")
    assert f"99999 is not in the range 0<=x<={MAX_MAXACTIVE}" in run.stderr


# --- probe specs -------------------------------------------------------------------

class Spec(NamedTuple):
    """A spec as `kpctl add` takes it, and as probes_from_targets() does."""
    target: str
    args: tuple[str, ...] = ()
    ret: bool = False
    name: str | None = None
    group: str = "kpctl"

    def argv(self) -> list[str]:
        options = ["--ret"] * self.ret + (["--name", self.name] if self.name is not None else [])
        return [*options, "--group", self.group, self.target, *self.args]


DIGITS = "9" * 5000
# Through `kpctl add --dry-run` as well as probes_from_targets().
CLI_SPECS = {
    "an unknown type": Spec("vfs_read", ("x=$arg1:s99",)),
    "a bare unknown type": Spec("vfs_read", (":s99",)),
    "$arg99999": Spec("vfs_read", ("$arg99999",)),
    "an argument name given twice": Spec("vfs_read", ("x=$arg1", "x=$arg2")),
    "an unnamed argument's name given twice": Spec("vfs_read", ("arg2=$arg1", "$arg2")),
    "129 fetch arguments": Spec("vfs_read", tuple(f"a{i}=$arg1" for i in range(129))),
    "$retval on an entry probe": Spec("vfs_read", ("r=$retval",)),
    "$comm:u32": Spec("vfs_read", ("c=$comm:u32",)),
    "a string immediate as u8": Spec("vfs_read", ('s=\\"x":u8',)),
    "a string immediate with a space": Spec("vfs_read", ('s=\\"a b"',)),
    "a string immediate with a newline": Spec("vfs_read", ('s=\\"a\n-:kpctl/open"',)),
    "a group ../x": Spec("vfs_read", group="../x"),
    "a name of 65 characters": Spec("vfs_read", name="n" * 65),
    "a name of 100,000 characters": Spec("vfs_read", name="n" * 100_000),
    "an offset of 5,000 digits": Spec("vfs_read+" + DIGITS),
    "an immediate of 5,000 digits": Spec("vfs_read", ("x=\\" + DIGITS,)),
    "a bitfield of 5,000 digits": Spec("vfs_read", ("x=$arg1:b" + DIGITS + "@0/32",)),
    "2,000 nested dereferences": Spec("vfs_read", ("x=" + "+0(" * 2000 + "$arg1" + ")" * 2000,)),
    "an Arabic-Indic digit": Spec("vfs_read", ("$arg\u0661",)),
}
# Through probes_from_targets() only: the same checks, in other places of a spec.
MORE_SPECS = {
    "$retval dereferenced on an entry probe": Spec("vfs_read", ("r=+0($retval):u8",)),
    "a group of 64 characters": Spec("vfs_read", group="g" * 64),
    "an empty name": Spec("vfs_read", name=""),
    "a symbol of 512 characters": Spec("s" * 512),
    "a module name of 56 characters": Spec("m" * 56 + ":vfs_read"),
    "a target given twice": Spec("vfs_read,vfs_read"),
    "a target of 100,000 characters given twice": Spec(",".join(["t" * 100_000] * 2)),
    "a byte that is not UTF-8 in a target": Spec("vfs_read\udcff"),
    "a byte that is not UTF-8 in a fetch argument": Spec("vfs_read", ("x=$arg1:\udcff",)),
    "an address of 5,000 digits": Spec(DIGITS),
    "$arg of 5,000 digits": Spec("vfs_read", ("$arg" + DIGITS,)),
    "$stack of 5,000 digits": Spec("vfs_read", ("$stack" + DIGITS,)),
    "an array of 5,000 digits": Spec("vfs_read", ("x=$arg1:u8[" + DIGITS + "]",)),
    "a bitfield offset of 5,000 digits": Spec("vfs_read", ("x=$arg1:b1@" + DIGITS + "/32",)),
    "a dereference offset of 5,000 digits": Spec("vfs_read", ("x=+" + DIGITS + "($arg1)",)),
    "a memory address of 5,000 digits": Spec("vfs_read", ("x=@" + DIGITS,)),
    "a symbol offset of 5,000 digits": Spec("vfs_read", ("x=@jiffies+" + DIGITS,)),
    "15 nested dereferences": Spec("vfs_read", ("x=" + "+0(" * 15 + "$arg1" + ")" * 15,)),
    "a string immediate with a tab": Spec("vfs_read", ('s=\\"a\tb"',)),
    "a string immediate with a no-break space": Spec("vfs_read", ('s=\\"a\u00a0b"',)),
    "a string immediate with a NUL": Spec("vfs_read", ('s=\\"a\x00b"',)),
    "a fullwidth digit in an offset": Spec("vfs_read+\uff11"),
    "a Devanagari digit in an array": Spec("vfs_read", ("x=$arg1:u8[\u0968]",)),
}
BAD_SPECS = CLI_SPECS | MORE_SPECS


@pytest.mark.parametrize("spec", CLI_SPECS.values(), ids=CLI_SPECS.keys())
def test_a_bad_spec_is_refused_by_add_dry_run_in_one_line(kernel: Path, spec: Spec) -> None:
    refused(kernel, "add", "--dry-run", *spec.argv())


@pytest.mark.parametrize("spec", BAD_SPECS.values(), ids=BAD_SPECS.keys())
def test_a_bad_spec_is_a_bounded_kpctl_error_from_probes_from_targets(spec: Spec) -> None:
    with pytest.raises(KpctlError) as raised:
        probes_from_targets(spec.target, spec.args, spec.ret, None, spec.name, spec.group)
    assert len(raised.value.message) + len(raised.value.hint or "") < MESSAGE_LIMIT


@pytest.mark.parametrize("spec", ["a string immediate with a newline", "129 fetch arguments"])
def test_a_bad_spec_added_for_real_changes_nothing(kernel: Path, spec: str) -> None:
    refused(kernel, "add", *CLI_SPECS[spec].argv())


@pytest.mark.parametrize("argv", [[b"vfs_read\xff"], [b"vfs_read", b"x=\xff"], [b"vfs_read", b's=\\"\xff"']],
                         ids=["target", "fetch argument", "string immediate"])
def test_a_byte_that_is_not_utf8_in_a_spec_is_a_usage_error(kernel: Path, argv: list[bytes]) -> None:
    before = snapshot(kernel)
    run = kpctl(kernel, "add", *argv)
    assert_refused(run)
    assert "is not UTF-8 text" in run.stderr and snapshot(kernel) == before


def test_fourteen_nested_dereferences_are_the_kernels_limit_and_taken() -> None:
    [probe] = probes_from_targets("vfs_read", ["x=" + "+0(" * 14 + "$arg1" + ")" * 14], False, None, None, "kpctl")
    assert parse_probe(format_probe(probe)) == probe


def test_a_maxactive_of_5000_digits_is_a_usage_error(kernel: Path) -> None:
    refused(kernel, "add", "--dry-run", "--ret", "--maxactive", DIGITS, "vfs_read")


def test_list_of_a_group_outside_the_tracefs_tree_is_a_usage_error(kernel: Path) -> None:
    refused(kernel, "list", "-g", "../x")


# --- properties of the parsers -----------------------------------------------------

@PURE
@given(
    targets=spec_text(VALID_TARGETS),
    fetchargs=st.lists(spec_text(VALID_FETCHARGS), max_size=4),
    ret=st.booleans(),
    maxactive=st.none() | st.integers(-2, MAX_MAXACTIVE + 2),
    name=st.none() | spec_text(VALID_NAMES),
    group=st.just("kpctl") | spec_text(VALID_GROUPS),
)
def test_any_spec_makes_probes_that_format_and_parse_back_or_a_kpctl_error(
    targets: str, fetchargs: list[str], ret: bool, maxactive: int | None, name: str | None, group: str,
) -> None:
    try:
        probes = probes_from_targets(targets, fetchargs, ret, maxactive, name, group)
    except KpctlError as e:
        assert len(e.message) + len(e.hint or "") < MESSAGE_LIMIT
        return
    for probe in probes:
        assert parse_probe(format_probe(probe)) == probe


@PURE
@given(line=mutated([f"p:kpctl/x {t} {' '.join(VALID_FETCHARGS[:3])}" for t in VALID_TARGETS[:3]]
                    + ["r16:g/e vfs_read $retval:s32", "p vfs_read+0x10 +u8(%sp):x8[2]"]) | st.text())
def test_any_probe_line_parses_to_a_probe_that_formats_back_or_is_a_kpctl_error(line: str) -> None:
    try:
        probe = parse_probe(line)
    except KpctlError:
        return
    assert parse_probe(format_probe(probe)) == probe


SET_FIELDS = ["name", "owner", "group", "probes"]
PROBE_FIELDS = ["target", "name", "kind", "args", "filter", "maxactive", "backend", "enabled"]
scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12) | spec_text(VALID_TARGETS, 2000)
nested = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(SET_FIELDS + PROBE_FIELDS) | st.text(max_size=6), inner, max_size=4),
    max_leaves=25)
probe_entries = st.dictionaries(st.sampled_from(PROBE_FIELDS), nested | spec_text(VALID_FETCHARGS, 2000)
                                | st.lists(spec_text(VALID_FETCHARGS, 2000), max_size=3), max_size=6)
documents = st.fixed_dictionaries({"name": st.sampled_from(["set", "s.1-x"]) | scalars,
                                   "probes": st.lists(probe_entries, max_size=4) | nested},
                                  optional={"owner": scalars, "group": scalars | spec_text(VALID_GROUPS, 2000),
                                            "extra": nested}) | nested
VALID_SET = "name: reads\nowner: me\ngroup: kpctl\nprobes:\n  - target: vfs_read\n    args: ['size=$arg3:u64']\n" \
            "    kind: entry\n  - target: vfs_read\n    kind: return\n    maxactive: 16\n    name: r\n    enabled: false\n"


def yaml_text(document: Any) -> str:
    return yaml.safe_dump(document, allow_unicode=True)


@PURE
@given(text=st.one_of(documents.map(yaml_text), mutated([VALID_SET, BOMB, "[" * 40]), st.text()))
def test_any_set_document_is_a_probe_set_or_a_bounded_kpctl_error(text: str) -> None:
    try:
        result = parse_probe_set(text, "set.yaml")
    except KpctlError as e:
        assert len(e.message) + len(e.hint or "") < MESSAGE_LIMIT
        return
    assert isinstance(result, ProbeSet)


def test_the_valid_set_the_fuzz_mutates_is_valid() -> None:
    assert len(parse_probe_set(VALID_SET, "set.yaml").probes) == 2


@SPAWNING
@given(argv=st.lists(spec_text(VALID_FETCHARGS), max_size=3), target=spec_text(VALID_TARGETS))
def test_any_spec_through_add_dry_run_exits_0_1_or_2_without_traceback_and_changes_nothing(
    kernel: Path, target: str, argv: list[str],
) -> None:
    before = snapshot(kernel)
    run = kpctl(kernel, "add", "--dry-run", "--", argv_bytes(target), *map(argv_bytes, argv))
    assert run.code in (0, 1, 2) and "Traceback" not in run.output
    if run.code:
        assert_refused(run, run.code)
    assert snapshot(kernel) == before


# --- options: checked before any kernel is asked -----------------------------------

def textfile_untouched(kernel: Path, path: Path) -> None:
    """stats --textfile path refused without a traceback, path and its directory as
    they were (the same inode, the same type, nothing added beside it)."""
    before = snapshot(path.parent)
    run = kpctl(kernel, "stats", "--textfile", str(path))
    assert run.code != 0 and "Traceback" not in run.output
    assert sum(line.startswith("Error: ") for line in run.stderr.splitlines()) == 1, run.output
    assert len(run.output.encode()) < REFUSAL_LIMIT
    assert snapshot(path.parent) == before


def test_stats_textfile_leaves_a_character_device_as_it_was(kernel: Path, tmp_path: Path) -> None:
    textfile_untouched(kernel, scratch_device(tmp_path / "full", 1, 7))


def test_stats_textfile_leaves_a_fifo_as_it_was_without_waiting_for_a_reader(kernel: Path, tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    textfile_untouched(kernel, tmp_path / "fifo")


def test_stats_textfile_leaves_a_symlink_and_its_target_as_they_were(kernel: Path, tmp_path: Path) -> None:
    (tmp_path / "target").write_text("kept\n")
    (tmp_path / "link").symlink_to(tmp_path / "target")
    textfile_untouched(kernel, tmp_path / "link")
    assert (tmp_path / "target").read_text() == "kept\n"


@pytest.mark.parametrize("args", [["watch", "-d", "nan"], ["watch", "-d", "inf"], ["count", "vfs_read", "-d", "nan"],
                                  ["trace", "vfs_read", "-d", "inf"]], ids=" ".join)
def test_a_duration_that_is_not_a_finite_number_is_a_usage_error(kernel: Path, args: list[str]) -> None:
    refused(kernel, *args)


@pytest.mark.parametrize("args", [["rm", ""], ["stats", "--textfile", ""]], ids=" ".join)
def test_an_empty_name_or_path_is_a_usage_error(kernel: Path, args: list[str]) -> None:
    refused(kernel, *args)


@pytest.mark.parametrize("args", [["stats", "--textfile", "kpctl.prom", "--json"],
                                  ["count", "vfs_read", "--json", "--format", "prometheus"],
                                  ["latency", "vfs_read", "-u", "-m"]], ids=" ".join)
def test_options_that_conflict_are_a_usage_error(kernel: Path, tmp_path: Path, args: list[str]) -> None:
    args = [str(tmp_path / a) if a == "kpctl.prom" else a for a in args]
    refused(kernel, *args)
    assert not (tmp_path / "kpctl.prom").exists()
