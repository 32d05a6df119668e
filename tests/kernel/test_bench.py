"""kpctl bench on a real kernel: every row it measures counted exactly the calls it
made and was the kind of kprobe it claims; rows the kernel cannot do say why; nothing
it set up is left, and the optimization sysctl is as it was."""
from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pytest
from click.testing import CliRunner
from kmod_fixtures import KmodClient, kmod, reload_after  # noqa: F401 (fixtures)
from test_gc import state as gc_state

from kpctl.cli.main import cli
from kpctl.inspect.arm import OPTIMIZATION_SYSCTL
from kpctl.kmod import build, loader
from kpctl.tracefs import Tracefs, find_tracefs

CHECKOUT = Path(__file__).resolve().parents[2]
X86 = platform.machine() == "x86_64"


def bench(*args: str) -> dict:
    # Enough calls that the comparisons below stand above emulation's noise (a row's
    # runs take a fraction of a second; setting rows up is most of the time).
    proc = subprocess.run([sys.executable, "-m", "kpctl", "bench", "--json", "--calls", "20000", "--runs", "5", *args],
                          cwd=CHECKOUT, text=True, capture_output=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def nothing_left(tracefs: Tracefs) -> None:
    assert "kpctl_bench" not in tracefs.read("dynamic_events")
    assert not [d for d in tracefs.path("instances").iterdir() if d.name.startswith("kpctl_bench")]


def test_every_measured_row_counted_every_call(kmod: KmodClient) -> None:  # noqa: F811
    tracefs = Tracefs(find_tracefs())
    sysctl = OPTIMIZATION_SYSCTL.read_text() if OPTIMIZATION_SYSCTL.exists() else None
    result = bench()
    rows = {r["mechanism"]: r for r in result["rows"]}
    assert result["context"]["driver"].startswith("kpctl_kmod calls kpctl_bench_target() in a loop")
    measured = [r for r in result["rows"][1:] if r["ns_per_hit"] is not None]
    assert all(r["checked"] for r in measured), measured
    for name in ("kprobe event, disabled", "kprobe at +0 (tracefs)", "kprobe at an offset, int3/BRK",
                 "kretprobe (tracefs)", "kprobe (module)", "kretprobe (module)", "BPF kprobe", "BPF kretprobe",
                 "ftrace function tracer"):
        assert rows[name]["ns_per_hit"] is not None, rows[name]
    # The live code at each kprobe, read through /proc/kcore, is what its flags say.
    assert rows["kprobe at an offset, int3/BRK"]["detail"].endswith(f"live code {'int3' if X86 else 'brk'}")
    if X86:
        assert rows["kprobe at +0 (tracefs)"]["detail"] == "FTRACE, live code call"
        assert rows["kprobe at an offset, optimized"]["detail"].endswith("OPTIMIZED, live code jmp"), \
            rows["kprobe at an offset, optimized"]
    else:
        assert rows["kprobe at an offset, optimized"]["detail"].startswith("this kernel has no jump optimization")
    assert rows["BPF fentry"]["ns_per_hit"] is None and rows["BPF fentry"]["detail"]  # no BTF for the module
    # What every reading of the table rests on: a probe costs something; a return probe
    # more than an entry probe on the same function (the module's pair: its handlers
    # only count, so the difference is the kretprobe's own); on x86 a trap more than
    # the optimized jump. Each by its fastest run: the host's load only slows runs down
    # (on arm64 6.1 a busy host once put the median kprobe above the kretprobe).
    assert all(r["best"] > 0 for r in measured if r["mechanism"] != "kprobe event, disabled"), measured
    assert rows["kretprobe (module)"]["best"] > rows["kprobe (module)"]["best"], rows
    if X86:
        assert rows["kprobe at an offset, int3/BRK"]["best"] > rows["kprobe at an offset, optimized"]["best"]
    nothing_left(tracefs)
    assert (OPTIMIZATION_SYSCTL.read_text() if OPTIMIZATION_SYSCTL.exists() else None) == sysctl
    assert kmod.dump() == [], "the module's bench probes were left"


def test_without_the_module_a_syscall_loop_drives(kmod: KmodClient) -> None:  # noqa: F811
    loader.unload()
    moved = build.build_dir(build.kernel_release()) / "kpctl_kmod.ko"
    aside = moved.with_suffix(".aside")
    moved.rename(aside)  # bench must not load it either
    try:
        result = bench("--calls", "2000", "--runs", "2")  # no comparisons here: short
    finally:
        aside.rename(moved)
        loader.load(moved)
    assert result["context"]["driver"].startswith("a getpgid() loop from user space")
    rows = {r["mechanism"]: r for r in result["rows"]}
    assert rows["kprobe at +0 (tracefs)"]["checked"], rows["kprobe at +0 (tracefs)"]
    assert rows["kprobe (module)"]["detail"].startswith("measured with the module's driver only")
    nothing_left(Tracefs(find_tracefs()))



@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_mid_bench_removes_everything_and_restores_the_sysctl(
        kmod: KmodClient, signum: signal.Signals) -> None:  # noqa: F811
    """Stopped while the int3/BRK row holds its probe (on x86 with optimization
    turned off for it)."""
    tracefs = Tracefs(find_tracefs())
    sysctl = OPTIMIZATION_SYSCTL.read_text() if OPTIMIZATION_SYSCTL.exists() else None
    proc = subprocess.Popen([sys.executable, "-m", "kpctl", "bench", "--calls", "20000", "--runs", "3"],
                            cwd=CHECKOUT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    offset_probe = f"kpctl_bench_{proc.pid}/bench kpctl_kmod:kpctl_bench_target+"
    deadline = time.monotonic() + 300
    while offset_probe not in tracefs.read("dynamic_events") or (sysctl is not None and OPTIMIZATION_SYSCTL.read_text() != "0\n"):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and err.endswith("Error: stopped: everything it set up is removed\n"), (out, err)
    nothing_left(tracefs)
    assert (OPTIMIZATION_SYSCTL.read_text() if OPTIMIZATION_SYSCTL.exists() else None) == sysctl
    assert kmod.dump() == []


def _bench_in_the_modules_loop() -> subprocess.Popen[str]:
    """A bench whose first run (the unprobed baseline: a long loop in the module's
    BENCH) has begun."""
    proc = subprocess.Popen([sys.executable, "-m", "kpctl", "bench", "--calls", "100000000", "--runs", "1"],
                            cwd=CHECKOUT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    # The context lines come out just before the baseline runs.
    while not proc.stdout.readline().startswith("driver:"):
        assert proc.poll() is None, proc.communicate()
    time.sleep(1)  # well into the loop, which takes far longer than that
    assert proc.poll() is None
    return proc


def test_ctrl_c_ends_a_bench_in_the_modules_loop_within_2_seconds(kmod: KmodClient) -> None:  # noqa: F811
    proc = _bench_in_the_modules_loop()
    signalled = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert time.monotonic() - signalled < 2, err
    assert proc.returncode == 1 and err.endswith("Error: stopped: everything it set up is removed\n"), (out, err)
    nothing_left(Tracefs(find_tracefs()))


def test_rmmod_during_a_bench_returns_within_2_seconds_and_ends_it(kmod: KmodClient, reload_after: None) -> None:  # noqa: F811
    proc = _bench_in_the_modules_loop()
    started = time.monotonic()
    subprocess.run(["rmmod", loader.MODULE], check=True, timeout=60)
    assert time.monotonic() - started < 2
    assert not loader.is_loaded()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "Error: cannot run the bench driver: the module is being unloaded" in err, (out, err)


TARGET = "kpctl_kmod:kpctl_bench_target"


class Killed(NamedTuple):
    """A bench killed in one row: seen holding it (given the tracefs, the module's client,
    the kernel's kprobe lines before the bench, and its pid), and what gc removes
    after it (by pid). Where the row cannot run here, why."""
    holding: Callable[[Tracefs, KmodClient, list[str], int], bool]
    removed: Callable[[int], list[str]]
    unsupported: Callable[[Tracefs], str | None] = lambda tracefs: None


def _read(tracefs: Tracefs, relative: str) -> str:
    """A file of the bench's, or "" once it is gone (the bench removes them as it goes)."""
    try:
        return tracefs.path(relative).read_text()
    except OSError:
        return ""


def _probe(tracefs: Tracefs, pid: int) -> tuple[str, str, str] | None:
    """The bench's tracefs probe: its kind (p or r), where, and whether it is enabled in
    the bench's instance; None when there is none (or it just went)."""
    for line in tracefs.read("kprobe_events").splitlines():
        if line.split(None, 1)[0].endswith(f":kpctl_bench_{pid}/bench"):
            enabled = _read(tracefs, f"instances/kpctl_bench_{pid}/events/kpctl_bench_{pid}/bench/enable").strip()
            return (line[0], line.split()[1], enabled) if enabled else None
    return None


def _tracefs_probe(kind: str, enabled: str, at_offset: bool, sysctl: str | None = None,
                   optimized: bool = False) -> Callable[[Tracefs, KmodClient, list[str], int], bool]:
    def holding(tracefs: Tracefs, kmod: KmodClient, kprobes: list[str], pid: int) -> bool:  # noqa: F811
        probe = _probe(tracefs, pid)
        return (probe is not None and probe[0] == kind and probe[2] == enabled and ("+" in probe[1]) == at_offset
                and (sysctl is None or not OPTIMIZATION_SYSCTL.exists() or OPTIMIZATION_SYSCTL.read_text() == sysctl)
                and (not optimized or "[OPTIMIZED]" in tracefs.debugfs.joinpath("kprobes/list").read_text()))
    return holding


def _holds_a_bpf_program(pid: int) -> bool:
    for fd in Path(f"/proc/{pid}/fd").glob("*"):
        try:
            if os.readlink(fd) == "anon_inode:bpf-prog":
                return True
        except OSError:
            pass  # closed meanwhile
    return False


def _bpf_kprobe(kind: str) -> Callable[[Tracefs, KmodClient, list[str], int], bool]:
    """The bench holds a BPF program (only its BPF rows do), and the target has one more
    kprobe of that kind (k, r) than before: a perf kprobe (its line reads like the
    bystanders' at the same place)."""
    def on_target(lines: list[str]) -> int:
        return sum(1 for line in lines if line.split()[1] == kind and "kpctl_bench_target+" in line)

    def holding(tracefs: Tracefs, kmod: KmodClient, kprobes: list[str], pid: int) -> bool:  # noqa: F811
        lines = tracefs.debugfs.joinpath("kprobes/list").read_text().splitlines()
        return on_target(lines) > on_target(kprobes) and _holds_a_bpf_program(pid)
    return holding


def _tracefs_probe_removed(pid: int) -> list[str]:
    return [f"instance kpctl_bench_{pid}", f"probe kpctl_bench_{pid}/bench"]


KILLED = {
    "disabled": Killed(_tracefs_probe("p", "0", at_offset=False), _tracefs_probe_removed),
    "ftrace": Killed(lambda tracefs, kmod, kprobes, pid: _read(tracefs, f"instances/kpctl_bench_{pid}/current_tracer") == "function\n",
                     lambda pid: [f"instance kpctl_bench_{pid}"]),
    "fprobe": Killed(lambda tracefs, kmod, kprobes, pid: f"f:kpctl_bench_{pid}/fentry " in tracefs.read("dynamic_events")
                     and _read(tracefs, f"instances/kpctl_bench_{pid}/events/kpctl_bench_{pid}/fentry/enable") == "1\n",
                     lambda pid: [f"instance kpctl_bench_{pid}", f"fprobe kpctl_bench_{pid}/fentry"],
                     lambda tracefs: None if "f[:[<group>/][<event>]]" in tracefs.readme else "no fprobe events here"),
    "+0": Killed(_tracefs_probe("p", "1", at_offset=False), _tracefs_probe_removed),
    # At an offset with the optimization sysctl at 0 (x86): the sysctl is restored too.
    "int3/BRK": Killed(_tracefs_probe("p", "1", at_offset=True, sysctl="0\n"), lambda pid: [
        *_tracefs_probe_removed(pid), *([f"setting {OPTIMIZATION_SYSCTL} (back to 1)"] if OPTIMIZATION_SYSCTL.exists() else [])]),
    "optimized": Killed(_tracefs_probe("p", "1", at_offset=True, sysctl="1\n", optimized=True), _tracefs_probe_removed,
                        lambda tracefs: None if X86 and OPTIMIZATION_SYSCTL.exists() else "no jump optimization here"),
    "kretprobe": Killed(_tracefs_probe("r", "1", at_offset=False), _tracefs_probe_removed),
    "module": Killed(lambda tracefs, kmod, kprobes, pid: any(p.name == f"kpctl_bench_{pid}_0" for p in kmod.dump()),
                     lambda pid: [f"module probe kpctl_bench_{pid}_0"]),
    "module-kretprobe": Killed(lambda tracefs, kmod, kprobes, pid: any(p.name == f"kpctl_bench_{pid}_1" for p in kmod.dump()),
                               lambda pid: [f"module probe kpctl_bench_{pid}_1"]),
    # kpctl's own BPF programs are file descriptors: the kernel closes them, nothing for gc.
    "BPF-kprobe": Killed(_bpf_kprobe("k"), lambda pid: []),
    "BPF-kretprobe": Killed(_bpf_kprobe("r"), lambda pid: []),
}


def _settled(tracefs: Tracefs, kmod: KmodClient) -> dict[str, object]:  # noqa: F811
    """What the bench could leave: tracefs's and the kernel's lists, the module's probes
    and the optimization sysctl."""
    return {**gc_state(tracefs), "module": sorted(p.name for p in kmod.dump()),
            "sysctl": OPTIMIZATION_SYSCTL.read_text() if OPTIMIZATION_SYSCTL.exists() else None}


@pytest.mark.parametrize("row", KILLED.values(), ids=KILLED.keys())
def test_gc_removes_what_a_sigkilled_bench_left_and_restores_the_sysctl(kmod: KmodClient, row: Killed) -> None:  # noqa: F811
    """Killed while a row holds what it set up: gc removes exactly that and restores the
    sysctl, and another tool's probe and instance and a long-lived kpctl probe on the
    same function stay. Few calls: the rows before it need not measure anything."""
    tracefs = Tracefs(find_tracefs())
    if (why := row.unsupported(tracefs)) is not None:
        pytest.skip(why)  # no such row in this kernel's bench: its table says why
    tracefs.append_command("kprobe_events", f"p:othertool/bench_other {TARGET}")
    tracefs.make_instance("instances/othertool")
    added = CliRunner().invoke(cli, ["add", TARGET, "--name", "bench_keep"])
    proc = None
    try:
        tracefs.write_value("instances/othertool/events/othertool/bench_other/enable", "1")
        assert added.exit_code == 0, added.output
        before = _settled(tracefs, kmod)
        proc = subprocess.Popen([sys.executable, "-m", "kpctl", "bench", "--calls", "2000", "--runs", "1"],
                                cwd=CHECKOUT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        def holding() -> bool:
            return row.holding(tracefs, kmod, before["kprobes/list"], proc.pid)  # type: ignore[arg-type, union-attr]

        # A row with few calls lasts a moment: the bench is stopped once it holds the
        # row, and killed if it still does (stopped, it changes nothing).
        deadline = time.monotonic() + 300
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            if holding():
                proc.send_signal(signal.SIGSTOP)
                while Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "T":
                    time.sleep(0.001)
                if holding():
                    break
                proc.send_signal(signal.SIGCONT)
            time.sleep(0.002)  # a BPF row with few calls lasts a tenth of a second
        proc.kill()
        proc.communicate(timeout=60)
        result = CliRunner().invoke(cli, ["gc", "--json"])
        assert result.exit_code == 0, result.output
        assert sorted(json.loads(result.output[result.output.index("{"):])["removed"]) == sorted(row.removed(proc.pid))
        deadline = time.monotonic() + 5  # the last fd's release may end after the exit is seen
        while _settled(tracefs, kmod) != before and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _settled(tracefs, kmod) == before
    finally:
        if proc is not None and proc.poll() is None:  # a failure before the kill: the next test needs it gone
            proc.kill()
            proc.communicate(timeout=60)
        CliRunner().invoke(cli, ["rm", "bench_keep"])
        tracefs.remove_instance("instances/othertool")
        tracefs.append_command("kprobe_events", "-:othertool/bench_other")
