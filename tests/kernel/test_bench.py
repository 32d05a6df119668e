"""kpctl bench on a real kernel: every row it measures counted exactly the calls it
made and was the kind of kprobe it claims; rows the kernel cannot do say why; nothing
it set up is left, and the optimization sysctl is as it was."""
from __future__ import annotations

import json
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from kmod_fixtures import KmodClient, kmod, reload_after  # noqa: F401 (fixtures)

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


@pytest.mark.parametrize("row", ["int3/BRK", "module"])
def test_gc_removes_what_a_sigkilled_bench_left_and_restores_the_sysctl(kmod: KmodClient, row: str) -> None:  # noqa: F811
    """Killed while a row holds its probe: the int3/BRK row's tracefs probe and instance
    (on x86 with the optimization sysctl at 0), or the module row's probe in the module.
    Few calls: the rows before it need not measure anything."""
    tracefs = Tracefs(find_tracefs())
    sysctl = OPTIMIZATION_SYSCTL.read_text() if OPTIMIZATION_SYSCTL.exists() else None
    proc = subprocess.Popen([sys.executable, "-m", "kpctl", "bench", "--calls", "2000", "--runs", "1"],
                            cwd=CHECKOUT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    offset_probe = f"kpctl_bench_{proc.pid}/bench kpctl_kmod:kpctl_bench_target+"
    module_probe = f"kpctl_bench_{proc.pid}_0"

    def holding() -> bool:
        if row == "module":
            return any(p.name == module_probe for p in kmod.dump())
        return offset_probe in tracefs.read("dynamic_events") and (sysctl is None or OPTIMIZATION_SYSCTL.read_text() == "0\n")

    deadline = time.monotonic() + 300
    while not holding():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    proc.kill()
    proc.communicate(timeout=60)
    result = CliRunner().invoke(cli, ["gc", "--json"])
    assert result.exit_code == 0, result.output
    removed = json.loads(result.output[result.output.index("{"):])["removed"]
    if row == "module":
        assert f"module probe {module_probe}" in removed
    else:
        assert {f"instance kpctl_bench_{proc.pid}", f"probe kpctl_bench_{proc.pid}/bench"} <= set(removed)
    nothing_left(tracefs)
    assert f"kpctl_bench_{proc.pid}" not in tracefs.read("kprobe_events")
    assert (OPTIMIZATION_SYSCTL.read_text() if OPTIMIZATION_SYSCTL.exists() else None) == sysctl
    assert kmod.dump() == []
