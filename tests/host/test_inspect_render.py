"""inspect's pure parts: judging offsets, owners of probes, kallsyms sizes, and the text
and JSON output, on reports built from bytes measured in the guests."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("capstone")

from kpctl.backends.base import ProbeInfo
from kpctl.inspect.code import code_lines, offset_refusal
from kpctl.inspect.disasm import boundaries_of, disassemble
from kpctl.inspect.render import render_text, to_json
from kpctl.inspect.report import Report, ReturnTrip, Step
from kpctl.inspect.target import probes_on
from kpctl.model import Probe, Target, parse_probe
from kpctl.sessions import INSPECT_GROUP
from kpctl.symbols import KernelSymbols
from kpctl.tracefs import parse_kprobe_list

BASE = 0xFFFFFFFF947669E0
BEFORE = bytes.fromhex("0f1f440000 4157 4156 4155 4154 55 53")
OPTIMIZED = bytes.fromhex("0f1f440000 e916f6c22b 55 4154 55 53")


def _report(**changes: object) -> Report:
    report = Report(
        arch="x86_64", target="vfs_read+5", function="vfs_read", module=None, function_address=BASE,
        size=784, offset=5, probeable=True, reasons=[],
    )
    for key, value in changes.items():
        setattr(report, key, value)
    return report


def test_offset_refusal_x86_and_arm64() -> None:
    insns = disassemble(BEFORE, BASE, "x86_64")
    assert offset_refusal(5, insns, "x86_64") is None
    reason = offset_refusal(2, insns, "x86_64")
    assert reason and "not an instruction boundary" in reason and "+0" in reason
    arm = disassemble(bytes.fromhex("e9031eaa 1f2003d5"), BASE, "arm64")
    assert offset_refusal(4, arm, "arm64") is None
    assert "4-byte aligned" in (offset_refusal(6, arm, "arm64") or "")


def test_code_lines_mark_changes_and_sites() -> None:
    original = disassemble(BEFORE, BASE, "x86_64")
    patched = disassemble(OPTIMIZED, BASE, "x86_64", boundaries_of(original))
    lines = code_lines(patched, "x86_64", 0, True, original, BEFORE, OPTIMIZED, lambda a: "optinsn_slot")
    jump = next(line for line in lines if line.offset == 5)
    assert jump.changed == (0, 1, 2, 3, 4) and "optimized kprobe" in jump.note
    tail = next(line for line in lines if line.offset == 10)
    assert tail.text.startswith(".byte") and tail.refusal and "never executed" in tail.note
    assert next(line for line in lines if line.offset == 0).refusal is None  # the ftrace site, on x86


def test_ftrace_site_refused_without_kprobes_on_ftrace() -> None:
    arm = disassemble(bytes.fromhex("e9031eaa 1f2003d5 3f2303d5"), BASE, "arm64")
    lines = code_lines(arm, "arm64", 4, False)
    assert [line.refusal is None for line in lines] == [True, False, True]
    assert "ftrace patch site" in (lines[1].refusal or "")


def test_probes_on_the_function_and_their_owners() -> None:
    states = parse_kprobe_list(
        f"{BASE:x}  k  vfs_read+0x0    [FTRACE]\n"
        f"{BASE + 5:x}  k  vfs_read+0x5    [OPTIMIZED]\n"
        f"{BASE:x}  r  vfs_read+0x0    [FTRACE]\n"
        f"{BASE + 9:x}  k  vfs_read+0x9    [DISABLED]\n"
        f"{BASE + 0x400:x}  k  vfs_write+0x0    [FTRACE]\n"
    )
    defined = [
        parse_probe("p:kpctl/vfs_read vfs_read"),
        parse_probe(f"p:{INSPECT_GROUP}/p42 vfs_read+5"),
        parse_probe("r10:other/ret vfs_read"),
    ]
    elsewhere = [
        ProbeInfo(Probe("p", Target("vfs_read", 9), event="reads"), True, None, "kmod", address=BASE + 9),
        ProbeInfo(Probe("p", Target("vfs_read"), event="mine"), True, None, "tracefs"),  # no address: in kprobe_events
    ]
    probes = probes_on(_report(), states, defined, "kpctl", elsewhere)
    assert [(p.where, p.owner) for p in probes] == [
        ("vfs_read+0x0", "kpctl: tracefs kpctl/vfs_read"),
        ("vfs_read+0x5", f"kpctl inspect --arm (pid 42): tracefs {INSPECT_GROUP}/p42"),
        ("vfs_read+0x0", "another tool: tracefs other/ret"),
        ("vfs_read+0x9", "kpctl: backend kmod, probe reads"),
    ]
    alone = probes_on(_report(), states[:1], [], "kpctl")
    assert alone[0].owner.startswith("not in tracefs: perf_event_open")


def test_a_short_lived_probe_is_named_by_its_command_and_pid_also_past_endbr(tmp_path: Path) -> None:
    """x86 kernels with IBT list a probe at +0 at +0x4: it is still the count's, or the
    trace's whose owner record says so, never another tool's."""
    from kpctl.owners import Owners

    states = parse_kprobe_list(f"{BASE + 4:x}  k  vfs_read+0x4    [FTRACE]\n{BASE + 4:x}  r  vfs_read+0x4    [FTRACE]\n")
    defined = [parse_probe("p:kpctl_count_77/vfs_read vfs_read"), parse_probe("r10:kpctl/traced vfs_read")]
    owners = Owners(tmp_path / "owners", tmp_path)
    (tmp_path / "owners" / "kpctl").mkdir(parents=True)
    (tmp_path / "owners" / "kpctl" / "traced").write_text('{"what": "trace", "pid": 7, "start": 1}')
    probes = probes_on(_report(), states, defined, "kpctl", owners=owners)
    assert [(p.where, p.owner) for p in probes] == [
        ("vfs_read+0x4", "kpctl count (pid 77): tracefs kpctl_count_77/vfs_read"),
        ("vfs_read+0x4", "kpctl trace (pid 7): tracefs kpctl/traced"),
    ]


def test_symbol_table_sizes_and_names(tmp_path: Path) -> None:
    kallsyms = tmp_path / "kallsyms"
    kallsyms.write_text(
        f"{BASE:x} T vfs_read\n{BASE + 784:x} T __kernel_write_iter\n"
        "ffffffffc0396000 t kprobe_optinsn_page\t[__builtin__kprobes]\n"
        "ffffffffc0390000 d __this_module\t[virtio_pci]\n"
    )
    table = KernelSymbols(kallsyms, tmp_path / "blacklist", tmp_path / "available_filter_functions")
    assert table.size_of(table.by_name["vfs_read"][0]) == 784
    namer = table.namer()
    assert namer(BASE + 5) == "vfs_read+0x5"
    assert namer(0xFFFFFFFFC0396040) == "kprobe_optinsn_page+0x40 [__builtin__kprobes]"
    assert namer(0xFFFFFFFFC0393000) is None  # after a data symbol: no function there


def _steps() -> list[Step]:
    original = disassemble(BEFORE, BASE, "x86_64")
    bounds = boundaries_of(original)

    def step(name: str, data: bytes, flags: tuple[str, ...] = ()) -> Step:
        lines = code_lines(disassemble(data, BASE, "x86_64", bounds), "x86_64", 0, True, original, BEFORE, data)
        return Step(name, f"{name} summary", lines, flags, 0.2)

    return [step("before", BEFORE), step("optimized", OPTIMIZED, ("OPTIMIZED",)), step("restored", BEFORE)]


def test_render_text() -> None:
    report = _report(
        code=_steps()[0].code, steps=_steps(),
        ret=ReturnTrip("arch_rethook_trampoline", 0xFFFFFFFF94476930, None, "ksys_read+0x6b", "vfs_read", "46", 132, "python3"),
    )
    text = render_text(report)
    assert text.startswith("vfs_read+5: 0xffffffff947669e5 (vfs_read at 0xffffffff947669e0, 784 bytes, vmlinux, x86_64)")
    assert "probe here: yes" in text
    assert "  * +5    ffffffff947669e5  41 57" in text
    assert "[e9] [16] [f6] [c2] [2b]" in text
    assert "2. optimized (+0.2 s) [OPTIMIZED]: optimized summary" in text
    assert "returns go through arch_rethook_trampoline at 0xffffffff94476930" in text
    assert "vfs_read returned 46 to ksys_read+0x6b (pid 132 python3)" in text
    assert "kprobes on vfs_read now: none" in text
    colored = render_text(report, lambda b: f"<{b}>")
    assert "<e9> <16>" in colored


def test_render_refused_and_unreadable() -> None:
    report = _report(
        target="vfs_read+2", offset=2, probeable=False, reasons=["+2 is not an instruction boundary"],
        code_error="cannot read /proc/kcore: not root (it needs CAP_SYS_RAWIO); probes still work",
    )
    text = render_text(report)
    assert "probe here: no\n  - +2 is not an instruction boundary\n" in text
    assert "code: unavailable: cannot read /proc/kcore: not root" in text


def test_json() -> None:
    report = _report(code=_steps()[0].code, steps=_steps(), ret=ReturnTrip(None, None, None))
    data = json.loads(json.dumps(to_json(report)))
    assert data["address"] == "0xffffffff947669e5" and data["probeable"] is True
    assert data["code"][1] == {
        "offset": 5, "address": "0xffffffff947669e5", "bytes": "41 57", "instruction": "push r15",
        "probe_allowed": True, "refusal": None, "note": None, "changed": [],
    }
    optimized = data["steps"][1]
    assert optimized["flags"] == ["OPTIMIZED"] and optimized["code"][1]["changed"] == [0, 1, 2, 3, 4]
    assert data["return"]["trampoline"] is None and data["return"]["caller"] is None
