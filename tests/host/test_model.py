"""The probe model: parse and format every documented form, and what kernels print back."""
from __future__ import annotations

from pathlib import Path

import pytest
from captured import CAPTURES
from hypothesis import given
from hypothesis import strategies as st

from kpctl.errors import ProbeSyntaxError
from kpctl.model import (
    AllArguments,
    ArgType,
    Bitfield,
    BtfArgument,
    Comm,
    Dereference,
    FetchArg,
    FunctionArgument,
    Immediate,
    MemoryAddress,
    MemorySymbol,
    Probe,
    Register,
    ReturnValue,
    StackAddress,
    StackEntry,
    Target,
    default_event_name,
    format_probe,
    parse_fetch_arg,
    parse_probe,
)


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
def test_every_line_a_kernel_printed_formats_back_to_itself(capture: Path) -> None:
    for line in (capture / "kprobe_events").read_text().splitlines():
        assert format_probe(parse_probe(line)) == line


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
def test_every_line_a_kernel_accepted_parses(capture: Path) -> None:
    for result in (capture / "probe-results").read_text().splitlines():
        if result.startswith("accepted: "):
            parse_probe(result.removeprefix("accepted: "))


@pytest.mark.parametrize(("text", "expected"), [
    ("%di", FetchArg(Register("di"))),
    ("a=%x0:u32", FetchArg(Register("x0"), "a", ArgType("u32"))),
    ("@0xffffffff81000000", FetchArg(MemoryAddress(0xFFFFFFFF81000000))),
    ("j=@jiffies+8:u64", FetchArg(MemorySymbol("jiffies", 8), "j", ArgType("u64"))),
    ("@jiffies-8", FetchArg(MemorySymbol("jiffies", -8))),
    ("$stack3", FetchArg(StackEntry(3))),
    ("$stack", FetchArg(StackAddress())),
    ("$arg2", FetchArg(FunctionArgument(2))),
    ("$arg*", FetchArg(AllArguments())),
    ("$retval:s32", FetchArg(ReturnValue(), None, ArgType("s32"))),
    ("$comm", FetchArg(Comm())),
    ("p=+0($arg2):ustring", FetchArg(Dereference(0, FunctionArgument(2)), "p", ArgType("ustring"))),
    ("f=+8(+0($arg3)):x64", FetchArg(Dereference(8, Dereference(0, FunctionArgument(3))), "f", ArgType("x64"))),
    ("u=+u0($arg2):u8", FetchArg(Dereference(0, FunctionArgument(2), user=True), "u", ArgType("u8"))),
    ("n=-8($stack):x32", FetchArg(Dereference(-8, StackAddress()), "n", ArgType("x32"))),
    ("one=\\1234", FetchArg(Immediate("1234"), "one")),
    ('s=\\"hello"', FetchArg(Immediate('"hello"'), "s")),
    ("bf=$arg3:b4@2/32", FetchArg(FunctionArgument(3), "bf", ArgType("bitfield", Bitfield(4, 2, 32)))),
    ("arr=+0($stack):x8[4]", FetchArg(Dereference(0, StackAddress()), "arr", ArgType("x8", array=4))),
    ("count", FetchArg(BtfArgument("count"))),
    ("mode=file->f_mode", FetchArg(BtfArgument("file", "->f_mode"), "mode")),
    ("d=$arg1->f_path.dentry", FetchArg(FunctionArgument(1, "->f_path.dentry"), "d")),
    ("sym=$stack0:symbol", FetchArg(StackEntry(0), "sym", ArgType("symbol"))),
])
def test_fetch_arg_forms(text: str, expected: FetchArg) -> None:
    assert parse_fetch_arg(text) == expected
    assert str(expected) == text


@pytest.mark.parametrize(("line", "expected"), [
    ("p vfs_read", Probe("p", Target("vfs_read"))),
    ("p:kpctl/x vfs_read+8", Probe("p", Target("vfs_read", 8), "x", "kpctl")),
    ("p:x ext4:ext4_file_open", Probe("p", Target("ext4_file_open", module="ext4"), "x")),
    ("r:kpctl/ret vfs_read", Probe("r", Target("vfs_read"), "ret", "kpctl")),
    ("r10:kpctl/ret vfs_read", Probe("r", Target("vfs_read"), "ret", "kpctl", maxactive=10)),
    ("p:kpctl/addr 0xffffffff81234560", Probe("p", Target(address=0xFFFFFFFF81234560), "addr", "kpctl")),
    ("p:kpctl/x foo.isra.0", Probe("p", Target("foo.isra.0"), "x", "kpctl")),
])
def test_probe_forms(line: str, expected: Probe) -> None:
    assert parse_probe(line) == expected
    assert format_probe(expected) == line


def test_percent_return_is_a_return_probe_printed_as_r() -> None:
    probe = parse_probe("p:kpctl/x vfs_read%return ret=$retval")
    assert probe.is_return and format_probe(probe) == "r:kpctl/x vfs_read ret=$retval"


def test_hex_offset_reads_as_the_kernel_prints_it() -> None:
    assert format_probe(parse_probe("p vfs_read+0x10")) == "p vfs_read+16"


@pytest.mark.parametrize(("line", "message", "offset"), [
    ("q:kpctl/x vfs_read", "a probe starts with p, r or rMAXACTIVE, then :[GROUP/]EVENT", 0),
    ("p:kpctl/bad-name vfs_read", "event name must follow the same rules as C identifiers", 8),
    ("p:kpctl/x", "missing probe target (SYMBOL, MOD:SYMBOL, SYMBOL+OFFS or ADDRESS)", 9),
    ("p:kpctl/x vfs_read x=+0($arg1", "dereference brace is not closed", 29),
    ("p:kpctl/x vfs_read x=$arg0", "$argN counts from 1", 21),
    ("p:kpctl/x vfs_read x=$bogus", "unknown $-variable ($argN, $arg*, $retval, $stack, $stackN, $comm)", 21),
    ("p:kpctl/x vfs_read x=$arg1:b4@2", "a bitfield is b<bit-width>@<bit-offset>/<container-size>", 27),
    ("p:kpctl/x vfs_read%return+8", "target must be SYMBOL, MOD:SYMBOL, SYMBOL+OFFS, SYMBOL%return or ADDRESS", 25),
    ("p5:kpctl/x vfs_read", "MAXACTIVE is only for return probes (rN:)", 1),
])
def test_syntax_errors_point_at_the_byte(line: str, message: str, offset: int) -> None:
    with pytest.raises(ProbeSyntaxError) as e:
        parse_probe(line)
    assert (e.value.message, e.value.offset) == (message, offset)


def test_syntax_error_hint_marks_the_column() -> None:
    with pytest.raises(ProbeSyntaxError) as e:
        parse_probe("p:kpctl/x vfs_read x=+0($arg1")
    assert e.value.hint == "  p:kpctl/x vfs_read x=+0($arg1\n                               ^"


@pytest.mark.parametrize(("target", "is_return", "name"), [
    (Target("vfs_read"), False, "vfs_read"),
    (Target("vfs_read", 8), False, "vfs_read_8"),
    (Target("vfs_read"), True, "vfs_read_ret"),
    (Target("foo.isra.0"), False, "foo_isra_0"),
    (Target(address=0xFFFF0000), False, "addr_ffff0000"),
])
def test_default_event_names(target: Target, is_return: bool, name: str) -> None:
    assert default_event_name(target, is_return) == name


# --- property-based round trips ---------------------------------------------------------

identifiers = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True)
symbols = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}(\.isra\.0)?", fullmatch=True)
offsets = st.integers(0, 4096)
leaf_fetches = st.one_of(
    st.builds(Register, st.sampled_from(["di", "si", "ax", "x0", "x30", "sp", "pc"])),
    st.builds(MemoryAddress, st.integers(0, 2**64 - 1)),
    st.builds(MemorySymbol, symbols, st.integers(-4096, 4096)),
    st.builds(StackEntry, st.integers(0, 64)),
    st.just(StackAddress()),
    st.builds(FunctionArgument, st.integers(1, 12)),
    st.just(AllArguments()),
    st.just(ReturnValue()),
    st.just(Comm()),
    # The kernel splits a probe line at spaces, so an immediate string has none.
    st.builds(Immediate, st.one_of(st.integers(-2**31, 2**32).map(str), st.from_regex(r'"[a-z0-9:=]{0,8}"', fullmatch=True))),
    st.builds(BtfArgument, identifiers),
)
fetches = st.recursive(
    leaf_fetches,
    lambda inner: st.builds(Dereference, st.integers(-4096, 4096), inner, st.booleans()),
    max_leaves=3,
)
arg_types = st.one_of(
    st.sampled_from(["u8", "u16", "u32", "u64", "s8", "s16", "s32", "s64", "x8", "x16", "x32", "x64",
                     "string", "ustring", "symbol", "symstr", "char"]).map(ArgType),
    # A bitfield holds its width at its offset within its container, as the kernel requires.
    st.sampled_from([8, 16, 32, 64]).flatmap(lambda c: st.integers(1, c).flatmap(
        lambda w: st.builds(lambda o: ArgType("bitfield", Bitfield(w, o, c)), st.integers(0, c - w)))),
    st.builds(lambda b, n: ArgType(b, array=n), st.sampled_from(["u8", "x32", "string"]), st.integers(1, 64)),
)
# $comm and string immediates are strings: the kernel takes no other type for them.
fetch_args = st.builds(FetchArg, fetches, st.none() | identifiers, st.none() | arg_types).filter(
    lambda a: a.type is None or a.type == ArgType("string")
    or not (isinstance(a.fetch, Comm) or isinstance(a.fetch, Immediate) and a.fetch.text.startswith('"')))
targets = st.one_of(
    st.builds(Target, symbols, offsets, st.none() | identifiers),
    st.builds(lambda a: Target(address=a), st.integers(0, 2**64 - 1)),
)


@st.composite
def probes(draw: st.DrawFn) -> Probe:
    kind = draw(st.sampled_from(["p", "r"]))
    return Probe(
        kind=kind,
        target=draw(targets),
        event=draw(st.none() | identifiers),
        group=draw(st.none() | identifiers),
        args=tuple(draw(st.lists(fetch_args, max_size=4))),
        maxactive=draw(st.none() | st.integers(0, 4096)) if kind == "r" else None,
    )


@given(probes())
def test_parse_inverts_format(probe: Probe) -> None:
    assert parse_probe(format_probe(probe)) == probe


@given(fetch_args)
def test_fetch_arg_parse_inverts_str(arg: FetchArg) -> None:
    assert parse_fetch_arg(str(arg)) == arg
