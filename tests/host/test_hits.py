"""trace_pipe parsing against lines real kernels printed, and the watch output path."""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from captured import CAPTURES, DATA
from hypothesis import given, settings
from hypothesis import strategies as st

from kpctl import hits
from kpctl.backends.kmod import PROBE_NAMERS
from kpctl.hits import HitParser, HitStream, lost_events, parse_args, parse_value
from kpctl.model import ArgType, parse_probe

ENTRY = '             cat-154     [000] .....     6.381431: regs: (vfs_read+0x0/0x310) arg1=0xff36853042c4be00 buf=0x7ffc94e608d8 s0=0xffffffff84a76930 st=0xff68d6b340637ec0 cnt=832 bf=0 arr={0x30,0x69,0xa7,0x84} sym=arch_rethook_trampoline+0x0/0x60\n'
RETURN = '             cat-154     [000] .....     6.381650: retsfx: (ksys_read+0x6b/0xf0 <- vfs_read) ret=0x340\n'
REGS = parse_probe("p:kpcap/regs vfs_read arg1=%di buf=%si:x64 s0=$stack0 st=$stack cnt=$arg3:u32 bf=$arg3:b4@2/32 arr=+0($stack):x8[4] sym=$stack0:symbol")


def probes_of(capture: Path) -> list:
    return [parse_probe(line) for line in (capture / "kprobe_events").read_text().splitlines()]


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
def test_every_captured_line_is_a_hit_or_a_lost_notice(capture: Path) -> None:
    for name in ("trace_pipe", "trace_pipe.lost"):
        stream = HitStream(io.StringIO(), probes_of(capture))
        stream.feed((capture / name).read_text())
        assert stream.counts.unparsed == 0
        assert stream.counts.hits > 0


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
def test_captured_lost_notice_is_counted(capture: Path) -> None:
    text = (capture / "trace_pipe.lost").read_text()
    assert lost_events(text) and all(n > 0 for _, n in lost_events(text))


def test_entry_hit_fields_and_typed_arguments() -> None:
    [hit] = HitParser([REGS]).hits(ENTRY)
    assert (hit.comm, hit.tid, hit.cpu, hit.timestamp, hit.event) == ("cat", 154, 0, "6.381431", "regs")
    assert hit.where == "vfs_read+0x0" and not hit.is_return
    assert hit.args == {
        "arg1": 0xFF36853042C4BE00, "buf": 0x7FFC94E608D8, "s0": 0xFFFFFFFF84A76930, "st": 0xFF68D6B340637EC0,
        "cnt": 832, "bf": 0, "arr": [0x30, 0x69, 0xA7, 0x84], "sym": "arch_rethook_trampoline+0x0/0x60",
    }


def test_return_hit_shows_caller_and_function() -> None:
    [hit] = HitParser().hits(RETURN)
    assert hit.is_return and hit.function == "vfs_read"
    assert hit.where == "ksys_read+0x6b <- vfs_read"
    assert hit.args == {"ret": 0x340}


def test_return_hit_with_unknown_caller() -> None:
    line = "cat-365 [000] ..... 16.417638: open_ret: ([unknown/kretprobe'd] <- do_sys_openat2) ret=-2\n"
    [hit] = HitParser().hits(line)
    assert hit.where == "[unknown/kretprobe'd] <- do_sys_openat2" and hit.args == {"ret": -2}


def test_module_symbol_and_comm_with_dashes_and_spaces() -> None:
    line = "  kworker/0:1-events x-42 [001] d..2. 5.000001: mod: (ext4_file_open+0x0/0x1a0 [ext4]) arg1=1\n"
    [hit] = HitParser().hits(line)
    assert (hit.comm, hit.tid, hit.cpu) == ("kworker/0:1-events x", 42, 1)
    assert hit.where == "ext4_file_open+0x0 [ext4]"


def test_string_with_spaces_and_names_inside_splits_by_schema() -> None:
    probe = parse_probe('p:kpctl/o do_sys_openat2 path=+0($arg2):ustring dfd=$arg1:s32')
    line = 'sh-1 [000] ..... 1.0: o: (do_sys_openat2+0x0/0x170) path="/tmp/a b dfd=3" dfd=-100\n'
    [hit] = HitParser([probe]).hits(line)
    assert hit.args == {"path": "/tmp/a b dfd=3", "dfd": -100}


@pytest.mark.parametrize(("text", "arg_type", "value"), [
    ("-100", ArgType("s32"), -100),
    ("832", ArgType("u32"), 832),
    ("0x3", None, 3),
    ('"/etc/passwd"', ArgType("string"), "/etc/passwd"),
    ("(fault)", ArgType("ustring"), None),
    ("'a'", ArgType("char"), "a"),
    ("0xffffffff84a76930", ArgType("symbol"), "0xffffffff84a76930"),
    ("{1,2,3}", ArgType("u8", array=3), [1, 2, 3]),
    ('{"a","b"}', ArgType("string", array=2), ["a", "b"]),
    ("{-1,2}", None, [-1, 2]),
])
def test_values_are_typed(text: str, arg_type: ArgType | None, value: object) -> None:
    assert parse_value(text, arg_type) == value


def test_text_output_of_an_entry_and_a_return_hit() -> None:
    out = io.StringIO()
    HitStream(out, [REGS]).feed(RETURN)
    assert out.getvalue() == "      6.381650 000     154 cat              retsfx               ksys_read+0x6b <- vfs_read ret=0x340\n"


def test_json_output_is_one_typed_object_per_hit() -> None:
    out = io.StringIO()
    HitStream(out, [REGS], as_json=True, backend_of={"regs": "tracefs"}).feed(ENTRY)
    obj = json.loads(out.getvalue())
    assert obj["probe"] == "regs" and obj["backend"] == "tracefs" and obj["args"]["cnt"] == 832
    assert obj["time"] == 6.381431 and obj["where"] == "vfs_read+0x0"


def test_count_stops_exactly_and_filters_apply_first() -> None:
    lines = ENTRY.replace("cat-154", "sh-7") + ENTRY * 3
    stream = HitStream(io.StringIO(), [REGS], threads={"154"}, count=2)
    stream.feed(lines)
    assert stream.counts.hits == 2 and stream.done


def test_lost_events_are_reported_in_the_output_and_summary() -> None:
    out = io.StringIO()
    stream = HitStream(out)
    stream.feed("CPU:1 [LOST 29 EVENTS]\n" + RETURN)
    assert out.getvalue().splitlines()[-1] == "LOST 29 events on CPU 1"
    assert stream.summary() == "1 hits, 29 lost (buffer full: raise buffer_size_kb or narrow the probes)"


def test_unparsed_lines_are_counted() -> None:
    stream = HitStream(io.StringIO())
    stream.feed(RETURN + "garbage\n" + RETURN + "more garbage\n")
    assert stream.summary() == "2 hits, 2 unparsed lines (the first: 'garbage')"


def test_the_watchers_own_hits_are_left_out() -> None:
    out = io.StringIO()
    stream = HitStream(out, [REGS], own_pid=154)
    stream.feed(ENTRY + ENTRY.replace("cat-154 ", "cat-155 "))
    assert (stream.counts.hits, stream.counts.unparsed) == (1, 0)
    assert " 155 " in out.getvalue() and " 154 " not in out.getvalue()


def watched(capture: Path, as_json: bool) -> str:
    """What watch prints of a capture's hits, its LOST notices included."""
    probes = probes_of(capture)
    out = io.StringIO()
    stream = HitStream(out, probes, as_json=as_json, backend_of={p.event: "tracefs" for p in probes if p.event})
    for name in ("trace_pipe", "trace_pipe.lost"):
        stream.feed((capture / name).read_text())
    return out.getvalue()


# data/watch/ holds what watch printed of each capture before its output had a fast path
# (kpctl at 5186a9a): the fast path prints the same, byte for byte.
@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_watch_output_is_what_it_was_before_the_fast_path(capture: Path, as_json: bool) -> None:
    assert watched(capture, as_json) == (DATA / "watch" / f"{capture.name}.{'jsonl' if as_json else 'txt'}").read_text()


def test_output_is_the_same_once_the_rendered_pieces_kept_are_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    capture = CAPTURES[-1]
    expected = [watched(capture, as_json) for as_json in (False, True)]
    monkeypatch.setattr(hits, "_KEPT", 3)
    assert [watched(capture, as_json) for as_json in (False, True)] == expected


class Everyone:
    def __contains__(self, tid: object) -> bool:
        return True


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_a_filters_pick_is_output_as_the_whole_chunk(as_json: bool) -> None:
    """A filter's pick is arranged from its matches, else a chunk goes through split()."""
    capture = CAPTURES[-1]
    probes, text = probes_of(capture), (capture / "trace_pipe").read_text()
    out = io.StringIO()
    HitStream(out, probes, as_json=as_json, threads=Everyone()).feed(text)
    assert out.getvalue() == output_of(text, probes, as_json)


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_count_cuts_a_chunk_and_ends_the_watch(as_json: bool) -> None:
    capture = CAPTURES[-1]
    probes, text = probes_of(capture), (capture / "trace_pipe").read_text()
    out = io.StringIO()
    stream = HitStream(out, probes, as_json=as_json, count=5)
    stream.feed(text)
    assert out.getvalue().splitlines() == output_of(text, probes, as_json).splitlines()[:5]
    assert stream.done and stream.summary() == "5 hits"


def output_of(text: str, probes: list, as_json: bool) -> str:
    out = io.StringIO()
    HitStream(out, probes, as_json=as_json).feed(text)
    return out.getvalue()


def test_text_of_module_hits_is_their_hits_fields() -> None:
    """Events that name their probe in their arguments go hit by hit."""
    text = (DATA / "kmod" / "x86_64-6.12" / "trace.txt").read_text()
    out = io.StringIO()
    HitStream(out, namers=PROBE_NAMERS).feed(text)
    lines = out.getvalue().splitlines()
    hits_of = list(HitParser(namers=PROBE_NAMERS).hits(text))
    assert len(lines) == len(hits_of) > 0
    for line, h in zip(lines, hits_of, strict=True):
        assert line.startswith(f"{h.timestamp:>14} {h.cpu:03} {h.tid:>7} {h.comm:<16} {h.event:<20} {h.where}")


def test_json_of_module_hits_is_their_hits_fields() -> None:
    text = (DATA / "kmod" / "x86_64-6.12" / "trace.txt").read_text()
    out = io.StringIO()
    HitStream(out, as_json=True, namers=PROBE_NAMERS, backend_of={"cap_entry": "kmod"}).feed(text)
    assert [json.loads(line) for line in out.getvalue().splitlines()] == [
        {"time": float(h.timestamp), "cpu": h.cpu, "tid": h.tid, "comm": h.comm, "probe": h.event,
         "backend": "kmod" if h.event == "cap_entry" else "", "where": h.where, "args": h.args}
        for h in HitParser(namers=PROBE_NAMERS).hits(text)]


# Printed values: the forms the kernel prints, and odd text with the characters that could
# split arguments wrongly or need JSON's escapes.
NUMBER = st.sampled_from(["0", "-100", "832", "0x0", "0x340", "0xffffffffffffffff"])
STRING = st.sampled_from(['"/etc/ld.so.cache"', '"a b x=1"', '""', '"cat"'])
ODD = st.one_of(
    st.sampled_from(["-0", "007", "0x", "0xZ", "(fault)", '"a"b"', '"\\"', '"\u00e9"', "{}", "{0x1,}", "'a'"]),
    st.text(alphabet=' "\\x0123456789abf-=(){},\'\u00e9\t', max_size=12),
)
ODD_ONE_IN_6 = [False] * 5 + [True]
SCHEMAS = [
    ("x=$arg1 s=+0($arg2):string u=$arg3:u32 sym=$stack0:symbol arr=+0($stack):x8[2] y=$arg4",
     [st.one_of(NUMBER, STRING), STRING, NUMBER, st.sampled_from(["ksys_read+0x6d/0xf0", "0xffffffff8b4486dd"]),
      st.sampled_from(["{0x30,0x69}", "{-1,2}"]), NUMBER]),
    ("x=$arg1 c=+0($arg2):char", [NUMBER, st.sampled_from(["'a'", "'\\''"])]),  # a char has no fast path
    ("h=%si:x64 s=$arg3:s32 b=$arg3:b4@2/32", [NUMBER, NUMBER, NUMBER]),  # a number in the other base takes parse_value()
]


@settings(max_examples=300)
@given(st.data())
def test_json_arguments_are_parse_args_encoded(data: st.DataObject) -> None:
    """Several hits' arguments at once, as a chunk's hits of one probe go."""
    args, forms = data.draw(st.sampled_from(SCHEMAS))
    schema = HitParser([parse_probe(f"p:kpctl/e f {args}")]).schema("e")
    assert schema is not None
    texts = []
    for _ in range(data.draw(st.integers(1, 4))):
        values = [data.draw(ODD if data.draw(st.sampled_from(ODD_ONE_IN_6)) else form) for form in forms]
        texts.append("".join(f" {a.split('=')[0]}={v}" for a, v in zip(args.split(), values, strict=True)))
    assert schema.json_args(texts) == [json.dumps(parse_args(text, schema), separators=(",", ":")) for text in texts]


@settings(max_examples=200)
@given(st.text(alphabet=" -[]()0123456789ab:/.", min_size=1, max_size=20), st.sampled_from(["", " (  12)"]),
       st.sampled_from(["vfs_read+0x0/0x310", "ext4_file_open+0x0/0x1a0 [ext4]", "ksys_read+0x6b/0xf0 <- vfs_read"]))
def test_spans_render_as_the_hits_fields(comm: str, tgid: str, where: str) -> None:
    """Output renders a WHO or WHAT span from its own text: the fields are the whole line's."""
    text = f"{comm}-42 {tgid} [001] d..2. 5.000001: ev: ({where}) a=1\n"
    hits_of = list(HitParser().hits(text))
    out = io.StringIO()
    HitStream(out).feed(text)
    assert out.getvalue() == "".join(
        f"{h.timestamp:>14} {h.cpu:03} {h.tid:>7} {h.comm:<16} {h.event:<20} {h.where} a=1\n" for h in hits_of)
