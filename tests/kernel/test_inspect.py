"""kpctl inspect against the real kernel: the bytes kprobes write, read back from /proc/kcore.

Every fact is checked on the code itself: offsets come from disassembling the live
function, features from what the kernel shows (kallsyms, sysctls), never from versions.
"""
from __future__ import annotations

import importlib.util
import json
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import require

from kpctl.backends.base import ProbeInfo
from kpctl.backends.tracefs import TracefsBackend
from kpctl.errors import KernelRejectedError
from kpctl.inspect.arm import Arming
from kpctl.inspect.disasm import ARM64_KPROBE_BRK, X86_INT3, X86_JMP32, Arch, host_arch
from kpctl.inspect.inspector import Inspector
from kpctl.inspect.report import Report, Step
from kpctl.inspect.target import kprobes_on_ftrace
from kpctl.model import Probe, Target
from kpctl.sessions import INSPECT_GROUP
from kpctl.tracefs import Tracefs, find_tracefs

FUNCTION = "vfs_read"  # called by every read(2): the return probe sees one of ours
OPTIMIZATION = Path("/proc/sys/debug/kprobes-optimization")
x86_only = pytest.mark.skipif(platform.machine() != "x86_64", reason="x86_64 behaviour")
arm64_only = pytest.mark.skipif(platform.machine() != "aarch64", reason="arm64 behaviour")


def _arch() -> Arch:
    require(platform.machine() in ("x86_64", "aarch64"), f"inspect knows x86_64 and arm64, not {platform.machine()}")
    return host_arch()


@pytest.fixture(scope="module")
def shared_inspector() -> Inspector:
    """One for the module: its kallsyms tables take seconds to build under emulation.
    Code pages made at run time are read afresh by every inspection (KernelSymbols.dynamic)."""
    require(os.geteuid() == 0, "needs root")
    require(Path("/proc/kcore").exists(), "needs /proc/kcore (CONFIG_PROC_KCORE)")
    require(importlib.util.find_spec("capstone") is not None, "needs capstone")
    tracefs = Tracefs(find_tracefs())
    require(tracefs.path("kprobe_events").exists(), "needs kprobe events")
    require((tracefs.debugfs / "kprobes" / "list").exists(), "needs debugfs kprobes/list")
    return Inspector(tracefs, _arch())


@pytest.fixture
def inspector(shared_inspector: Inspector) -> Iterator[Inspector]:
    tracefs = shared_inspector.tracefs
    yield shared_inspector
    leftover = [line for line in tracefs.read("kprobe_events").splitlines() if f"{INSPECT_GROUP}/" in line]
    assert not leftover, f"inspect left probes behind: {leftover}"
    left = [d.name for d in tracefs.path("instances").iterdir() if d.name.startswith(INSPECT_GROUP)]
    assert not left, f"inspect left its instance behind: {left}"


@pytest.fixture
def no_optimization() -> Iterator[None]:
    """Keep x86 kprobes as int3: the optimizer would replace it within jiffies."""
    if not OPTIMIZATION.exists():
        yield
        return
    saved = OPTIMIZATION.read_text()
    OPTIMIZATION.write_text("0")
    try:
        yield
    finally:
        OPTIMIZATION.write_text(saved)


def _body_offset(inspector: Inspector) -> int:
    """The first place past the ftrace site where a probe may go, by disassembly."""
    report = inspector.inspect(FUNCTION)
    line = next(line for line in report.code if line.offset > 0 and line.refusal is None and not line.note)
    return line.offset


def _step(report: Report, name: str) -> Step:
    names = [s.name for s in report.steps]
    assert name in names, f"no step {name}: {names}"
    return next(s for s in report.steps if s.name == name)


def _at(step: Step, offset: int) -> bytes:
    return next(line.raw for line in step.code if line.offset == offset)


def _assert_restored(report: Report) -> None:
    before, last = report.steps[0], report.steps[-1]
    assert last.name == "restored", [s.name for s in report.steps]
    assert [line.raw for line in last.code] == [line.raw for line in before.code]
    assert not any(line.changed for line in last.code)


def test_breakpoint_at_probed_address(inspector: Inspector, no_optimization: None) -> None:
    offset = _body_offset(inspector)
    report = Arming(inspector).arm(inspector.inspect(f"{FUNCTION}+{offset}"), wait=2)
    armed = _at(_step(report, "armed"), offset)
    if inspector.arch == "x86_64":
        assert armed[0] == X86_INT3, armed.hex(" ")
    else:
        assert int.from_bytes(armed, "little") == ARM64_KPROBE_BRK, armed.hex(" ")
        assert armed == bytes.fromhex("800020d4")
    assert 0 in next(line.changed for line in _step(report, "armed").code if line.offset == offset)
    _assert_restored(report)


@x86_only
def test_x86_optimized_jump_within_bounded_wait(inspector: Inspector) -> None:
    require(OPTIMIZATION.exists() and OPTIMIZATION.read_text().strip() == "1",
            "kprobes-optimization is off or absent (CONFIG_OPTPROBES)")
    offset = _body_offset(inspector)
    report = Arming(inspector).arm(inspector.inspect(f"{FUNCTION}+{offset}"), wait=10)
    optimized = _step(report, "optimized")
    assert optimized.elapsed is not None and optimized.elapsed <= 10
    raw = _at(optimized, offset)
    assert raw[0] == X86_JMP32 and len(raw) == 5, raw.hex(" ")
    assert "OPTIMIZED" in optimized.flags
    _assert_restored(report)


@x86_only
def test_x86_entry_probe_goes_through_ftrace(inspector: Inspector) -> None:
    require(kprobes_on_ftrace(inspector.symbols), "no kprobe_ftrace_handler in kallsyms (CONFIG_KPROBES_ON_FTRACE)")
    report = Arming(inspector).arm(inspector.inspect(FUNCTION), wait=2)
    step = _step(report, "ftrace")
    assert "FTRACE" in step.flags
    assert _at(step, report.offset)[0] == 0xE8  # call into the ftrace trampoline (+4 after ENDBR64)
    assert "armed" not in [s.name for s in report.steps]  # no int3 anywhere
    _assert_restored(report)


def test_return_goes_through_trampoline(inspector: Inspector) -> None:
    report = Arming(inspector).arm(inspector.inspect(FUNCTION), wait=5)
    ret = report.ret
    assert ret is not None and ret.trampoline is not None, "no return trampoline in kallsyms"
    assert ret.trampoline_address
    assert ret.function == FUNCTION and ret.caller, ret
    assert ret.retval is not None and int(ret.retval, 0) >= 0


def test_non_boundary_offset_refused(inspector: Inspector) -> None:
    report = inspector.inspect(FUNCTION)
    if inspector.arch == "x86_64":
        longer = next(line for line in report.code if line.offset > 0 and len(line.raw) > 1)
        offset, reason = longer.offset + 1, "not an instruction boundary"
    else:
        offset, reason = 2, "not 4-byte aligned"
    refused = inspector.inspect(f"{FUNCTION}+{offset}")
    assert not refused.probeable and any(reason in r for r in refused.reasons), refused.reasons
    with pytest.raises(KernelRejectedError):  # and the kernel agrees
        backend = TracefsBackend(inspector.tracefs, group=INSPECT_GROUP, instance=f"instances/{INSPECT_GROUP}")
        backend.add([Probe("p", Target(symbol=FUNCTION, offset=offset), event="refused")])
    inspector.tracefs.remove_instance(f"instances/{INSPECT_GROUP}")


@arm64_only
def test_arm64_ftrace_site_refused(inspector: Inspector) -> None:
    require(not kprobes_on_ftrace(inspector.symbols), "this kernel has kprobes on ftrace")
    report = inspector.inspect(FUNCTION)
    site = next((line.offset for line in report.code if line.note.startswith("ftrace site")), None)
    require(site is not None, f"{FUNCTION} has no ftrace patch site")
    refused = inspector.inspect(f"{FUNCTION}+{site}")
    assert not refused.probeable and "ftrace patch site" in refused.reasons[0]


def test_cli_inspect_arm_json(inspector: Inspector) -> None:
    offset = _body_offset(inspector)
    done = subprocess.run(
        [sys.executable, "-m", "kpctl", "inspect", "--arm", "--json", f"{FUNCTION}+{offset}"],
        check=False, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["function"] == FUNCTION and data["probeable"]
    assert data["steps"][0]["step"] == "before" and data["steps"][-1]["step"] == "restored"
    assert data["return"]["trampoline"]


@pytest.mark.parametrize("function", [FUNCTION, "do_sys_openat2", "ksys_write"])
def test_marks_agree_with_the_kernel(inspector: Inspector, function: str) -> None:
    """Each instruction inspect marks as probeable the kernel accepts, each it refuses
    the kernel refuses: the probes are defined disabled, which registers them all the same."""
    report = inspector.inspect(function, instructions=24)
    backend = TracefsBackend(inspector.tracefs, group=INSPECT_GROUP, instance=f"instances/{INSPECT_GROUP}")
    disagree = []
    try:
        for n, line in enumerate(report.code):
            probe = Probe("p", Target(symbol=function, offset=line.offset), event=f"mark{n}")
            try:
                backend.add([probe], enable=False)
            except KernelRejectedError:
                accepted = False
            else:
                accepted = True
                backend.remove([f"mark{n}"])
            if accepted != (line.refusal is None):
                disagree.append(f"+{line.offset} {line.text}: kernel {'accepts' if accepted else 'refuses'}, "
                                f"inspect says {line.refusal or 'probeable'}")
    finally:
        backend.remove_all()
    assert not disagree, disagree


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_arm_interrupted_removes_its_probe(inspector: Inspector, signum: int) -> None:
    """--arm waits up to --wait for a return of a function nothing else calls: the
    return probe is then in place long enough to be interrupted."""
    rare = {"x86_64": "__x64_sys_sched_get_priority_max", "arm64": "__arm64_sys_sched_get_priority_max"}[inspector.arch]
    proc = subprocess.Popen(
        [sys.executable, "-m", "kpctl", "inspect", "--arm", "--wait", "60", rare],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while f"{INSPECT_GROUP}/" not in "".join(
                line for line in inspector.tracefs.read("kprobe_events").splitlines(True) if line.startswith("r")):
            assert proc.poll() is None and time.monotonic() < deadline, "inspect ended before its return probe"
            time.sleep(0.1)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 1
    assert err == "Error: interrupted: inspect --arm removed its probes and shows nothing\n"


def test_arm_interrupted_while_adding_removes_its_instance(inspector: Inspector, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Ctrl-C that lands in add() of the return probe (add() undoes its own probe): the
    instance made for that probe goes too; the fixture checks."""
    real_add = TracefsBackend.add

    def add_interrupted_at_return(self: TracefsBackend, probes: list[Probe], **kwargs: Any) -> list[ProbeInfo]:
        if probes[0].is_return:
            raise KeyboardInterrupt
        return real_add(self, probes, **kwargs)

    monkeypatch.setattr(TracefsBackend, "add", add_interrupted_at_return)
    with pytest.raises(KeyboardInterrupt):
        Arming(inspector).arm(inspector.inspect(FUNCTION), wait=1)


def test_a_running_counts_probe_is_named_by_its_command_and_pid(inspector: Inspector) -> None:
    count = subprocess.Popen([sys.executable, "-m", "kpctl", "count", "--engine", "tracefs", "vfs_read"],
                             cwd=Path(__file__).resolve().parents[2], text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert count.stderr is not None and "Ctrl-C ends" in count.stderr.readline(), count.communicate()
        owners = [p.owner for p in inspector.inspect("vfs_read").probes]
        assert f"kpctl count (pid {count.pid}): tracefs kpctl_count_{count.pid}/vfs_read" in owners, owners
        assert not any(o.startswith(("another tool", "not in tracefs")) for o in owners), owners
    finally:
        count.send_signal(signal.SIGINT)
        count.communicate(timeout=60)
