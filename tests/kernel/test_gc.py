"""`kpctl gc` after each kind of kpctl process not covered beside its feature's tests,
SIGKILLed once set up: gc removes everything of it, says so in --json's "removed", and
leaves alone what others made on the same function: another tool's probe and instance,
and a long-lived kpctl probe.

Every case probes one syscall's entry function that nothing in the guest calls (so that
inspect --arm waits for a return there, long enough to be killed), and so do the
bystanders."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
from click.testing import CliRunner
from conftest import require

from kpctl.cli.main import cli
from kpctl.inspect.disasm import host_arch
from kpctl.inspect.inspector import Inspector
from kpctl.tracefs import Tracefs, find_tracefs

CHECKOUT = Path(__file__).resolve().parents[2]
# A syscall nothing in the guest makes; its entry function has the arch's prefix.
FUNCTION = {"x86_64": "__x64_sys_", "aarch64": "__arm64_sys_"}.get(platform.machine(), "sys_") + "sched_get_priority_max"
OTHER_GROUP = "othertool"  # another tool's: its probe and its instance
OTHER_PROBE = f"p:{OTHER_GROUP}/other {FUNCTION}"
KEEP = "keepme"  # a long-lived kpctl probe
STARTED_WITHIN = 300  # seconds: a start-up under emulation, beside a busy neighbour


class Setting(NamedTuple):
    """What the cases share: tracefs, with the bystanders in place, and the offsets in
    FUNCTION where inspect accepts a probe when no other probe is there."""
    tracefs: Tracefs
    accepted: list[int]


@pytest.fixture(scope="module")
def setting() -> Iterator[Setting]:
    """The bystanders on FUNCTION for the whole module: each case checks they are still
    there."""
    require(os.geteuid() == 0 and Path("/sys/kernel/tracing/kprobe_events").exists(),
            "needs root and kprobe_events (CONFIG_KPROBE_EVENTS)")
    tracefs = Tracefs(find_tracefs())
    clean = Inspector(tracefs, host_arch()).inspect(FUNCTION)
    accepted = [line.offset for line in clean.code if line.refusal is None]
    tracefs.append_command("kprobe_events", OTHER_PROBE)
    try:
        tracefs.make_instance(f"instances/{OTHER_GROUP}")
        tracefs.write_value(f"instances/{OTHER_GROUP}/events/{OTHER_GROUP}/other/enable", "1")
        added = CliRunner().invoke(cli, ["add", FUNCTION, "--name", KEEP])
        assert added.exit_code == 0, added.output
        yield Setting(tracefs, accepted)
    finally:
        CliRunner().invoke(cli, ["rm", KEEP])
        tracefs.remove_instance(f"instances/{OTHER_GROUP}")
        tracefs.append_command("kprobe_events", f"-:{OTHER_GROUP}/other")


def state(tracefs: Tracefs) -> dict[str, list[str]]:
    """Everything a kpctl process could leave, each as sorted lines."""
    def lines(relative: str) -> list[str]:
        path = tracefs.path(relative)
        return sorted(line for line in path.read_text().splitlines() if line.strip()) if path.exists() else []

    instances = sorted(p.name for p in tracefs.path("instances").iterdir())
    # Triggers of dynamic events (the only ones kpctl puts triggers on), in every instance.
    groups = {line.split(None, 1)[0].partition(":")[2].partition("/")[0] for line in lines("dynamic_events")}
    triggers = sorted(
        f"{file.relative_to(tracefs.root)}: {line}"
        for where in ["", *(f"instances/{i}/" for i in instances)]
        for group in sorted(groups | {"synthetic"})
        for file in tracefs.path(f"{where}events/{group}").glob("*/trigger")
        for line in file.read_text().splitlines() if line.strip() and not line.startswith("#")
    )
    # The kernel's own list: BPF's and perf's kprobes are there and nowhere in tracefs.
    armed = sorted((tracefs.debugfs / "kprobes" / "list").read_text().splitlines())
    return {"kprobe_events": lines("kprobe_events"), "dynamic_events": lines("dynamic_events"), "instances": instances,
            "synthetic_events": lines("synthetic_events"), "triggers": triggers, "kprobes/list": armed}


def kpctl(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "kpctl", *args], cwd=CHECKOUT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(CHECKOUT)})


def says_ctrl_c_ends(proc: subprocess.Popen[str]) -> None:
    """The counting commands' line once they count (after any of gc's lines)."""
    assert proc.stderr is not None
    seen: list[str] = []
    while not seen or "Ctrl-C ends" not in seen[-1]:
        seen.append(proc.stderr.readline())
        assert seen[-1], (seen, proc.communicate())


def prints_its_header(proc: subprocess.Popen[str]) -> None:
    """A watch prints its header once it reads hits."""
    assert proc.stdout is not None
    header = proc.stdout.readline()
    assert header.split()[:2] == ["TIME", "CPU"], (header, proc.communicate())


class Case(NamedTuple):
    """A kpctl process: how to start it and see it set up (given the processes to end
    afterwards, for what must run beside it), and what gc removes after it (by pid)."""
    start: Callable[[Setting, list[subprocess.Popen[str]]], subprocess.Popen[str]]
    removed: Callable[[int], list[str]]


def counting(*args: str) -> Callable[[Setting, list[subprocess.Popen[str]]], subprocess.Popen[str]]:
    def start(setting: Setting, beside: list[subprocess.Popen[str]]) -> subprocess.Popen[str]:
        proc = kpctl(*args)
        says_ctrl_c_ends(proc)
        return proc
    return start


def through_bpf(command: str, *args: str, probes: int = 1) -> Callable[[Setting, list[subprocess.Popen[str]]], subprocess.Popen[str]]:
    """A counting command through kpctl's own BPF engine (bcc's works the same way: perf
    kprobes, fds only), seen set up by its probes in the kernel's list."""
    def start(setting: Setting, beside: list[subprocess.Popen[str]]) -> subprocess.Popen[str]:
        from kpctl.aggregation.bpf import availability

        available = availability()
        require(available.usable, available.detail)
        armed = len(state(setting.tracefs)["kprobes/list"])
        proc = counting(command, "--engine", "bpf", FUNCTION, *args)(setting, beside)
        assert len(state(setting.tracefs)["kprobes/list"]) == armed + probes, "its perf kprobes are not armed"
        return proc
    return start


def bpf_trace(setting: Setting, beside: list[subprocess.Popen[str]]) -> subprocess.Popen[str]:
    """trace --backend bpf: a bcc program on a perf kprobe, set up once it prints its
    header."""
    from kpctl.registry import backend_type

    available = backend_type("bpf").availability(setting.tracefs)
    require(available.usable, available.detail)
    armed = len(state(setting.tracefs)["kprobes/list"])
    proc = kpctl("trace", "--backend", "bpf", FUNCTION, "--name", "bpf_traced")
    prints_its_header(proc)
    assert len(state(setting.tracefs)["kprobes/list"]) == armed + 1, "its perf kprobe is not armed"
    return proc


def second_watch(setting: Setting, beside: list[subprocess.Popen[str]]) -> subprocess.Popen[str]:
    """The first watch reads kpctl's instance; the second, an instance of its own."""
    beside.append(kpctl("watch", "--duration", "600"))
    prints_its_header(beside[-1])
    proc = kpctl("watch", "--duration", "600")
    prints_its_header(proc)
    assert setting.tracefs.read(f"instances/kpctl-watch-{proc.pid}/events/kpctl/{KEEP}/enable").strip() == "1"
    return proc


def inspect_arm(setting: Setting, beside: list[subprocess.Popen[str]]) -> subprocess.Popen[str]:
    """inspect --arm says nothing while it works: it is killed once its return probe is
    in place beside the bystanders, waiting up to --wait for a return of FUNCTION, which
    never comes. Where their probes are a trap (arm64: no kprobes on ftrace), inspect
    judges the trap it reads instead of the instruction under it, refuses the place and
    misses the ftrace site after it: the entry probe goes where inspect accepts one in
    the code without them."""
    tracefs = setting.tracefs
    report = Inspector(tracefs, host_arch()).inspect(FUNCTION)
    target = FUNCTION if report.probeable else f"{FUNCTION}+{min(o for o in setting.accepted if o > report.offset)}"
    proc = kpctl("inspect", "--arm", "--wait", "60", target)
    deadline = time.monotonic() + STARTED_WITHIN
    while f"kpctl_inspect/p{proc.pid}_ret " not in tracefs.read("kprobe_events"):
        assert proc.poll() is None and time.monotonic() < deadline, ("inspect ended before its return probe",
                                                                      proc.communicate())
        time.sleep(0.05)
    return proc


CASES = {
    "hist-tracefs": Case(counting("hist", "--engine", "tracefs", FUNCTION, "x=$arg1:u64"),
                         lambda pid: [f"instance kpctl_count_{pid}", f"probe kpctl_count_{pid}/{FUNCTION}"]),
    "stacks-tracefs": Case(counting("stacks", "--engine", "tracefs", FUNCTION),
                           lambda pid: [f"instance kpctl_count_{pid}", f"probe kpctl_count_{pid}/{FUNCTION}"]),
    # The kernel closes BPF's and perf's with the process: nothing for gc.
    "count-bpf": Case(through_bpf("count"), lambda pid: []),
    "hist-bpf": Case(through_bpf("hist", "x=$arg1:u64"), lambda pid: []),
    "stacks-bpf": Case(through_bpf("stacks"), lambda pid: []),
    "latency-bpf": Case(through_bpf("latency", probes=2), lambda pid: []),
    "trace-bpf": Case(bpf_trace, lambda pid: []),
    "second-watch": Case(second_watch, lambda pid: [f"instance kpctl-watch-{pid}"]),
    "inspect-arm": Case(inspect_arm, lambda pid: [f"instance kpctl_inspect_p{pid}", f"probe kpctl_inspect/p{pid}_ret"]),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_gc_removes_all_a_sigkilled_kpctl_left_and_nothing_else(setting: Setting, case: Case) -> None:
    tracefs = setting.tracefs
    before = state(tracefs)
    assert OTHER_PROBE in before["kprobe_events"] and f"p:kpctl/{KEEP} {FUNCTION}" in before["kprobe_events"]
    assert OTHER_GROUP in before["instances"], "a bystander was lost before this case"
    beside: list[subprocess.Popen[str]] = []
    try:
        proc = case.start(setting, beside)
        proc.kill()
        proc.communicate(timeout=60)
        result = CliRunner().invoke(cli, ["gc", "--json"])
        assert result.exit_code == 0, result.output
        # Older clicks' CliRunner mixes stderr (gc's lines) into the output.
        assert sorted(json.loads(result.output[result.output.index("{"):])["removed"]) == sorted(case.removed(proc.pid))
        deadline = time.monotonic() + 5  # the last fd's release may end after the exit is seen
        while state(tracefs) != before and time.monotonic() < deadline:
            time.sleep(0.1)
        assert state(tracefs) == before
    finally:
        for other in beside:
            other.kill()
            other.communicate(timeout=60)
