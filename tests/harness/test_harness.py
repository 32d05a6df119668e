"""The harness's own tests: each failure mode of a guest must fail the run, naming the
guest and why. They boot real x86_64 guests (about 15 s each under TCG)."""
from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "guest"))
import harness  # noqa: E402

GUEST = harness.Guest(os.environ.get("KPCTL_HARNESS_TEST_ARCH", "x86_64"), "6.1")

pytestmark = pytest.mark.skipif(
    shutil.which(f"qemu-system-{'x86_64' if GUEST.arch == 'x86_64' else 'aarch64'}") is None,
    reason="qemu is not installed (run `make setup`)",
)


def test_command_output_and_exit_code_come_back_unjudged() -> None:
    # Only the kernel's own (timestamped) lines are judged: a test may print a splat's text.
    result = harness.run(
        GUEST, "uname -m; cat /sys/kernel/tracing/tracing_on; echo 'BUG: soft lockup, Oops, WARNING: CPU: 0 PID: 1'; exit 3",
        timeout=300, echo=False,
    )
    assert result.returncode == 3
    assert result.output.splitlines() == [
        "x86_64" if GUEST.arch == "x86_64" else "aarch64", "1", "BUG: soft lockup, Oops, WARNING: CPU: 0 PID: 1"]
    assert result.kernel_release.startswith("6.1.")


def test_kernel_panic_fails_with_guest_and_reason() -> None:
    with pytest.raises(harness.HarnessError, match=rf"guest {GUEST}: crashed: .*Kernel panic"):
        harness.run(GUEST, "echo c > /proc/sysrq-trigger", timeout=300, echo=False)


def test_hung_guest_fails_after_timeout_and_keeps_console_log() -> None:
    with pytest.raises(harness.HarnessError, match=rf"guest {GUEST}: hung: no power-off after 30 s") as exc:
        harness.run(GUEST, "sleep 600", timeout=30, echo=False)
    log = Path(str(exc.value).rsplit(" ", 1)[-1])
    assert "kpctl-guest:" in log.read_text()


def test_kernel_warning_in_dmesg_fails_the_run() -> None:
    # /dev/kmsg lines land in the kernel log exactly like a real WARN's first line.
    with pytest.raises(harness.HarnessError, match=rf"guest {GUEST}: kernel log shows a splat: .*WARNING: CPU: 0 PID: 1"):
        harness.run(GUEST, "echo 'WARNING: CPU: 0 PID: 1 at fake.c:1 test+0x0/0x10' > /dev/kmsg", timeout=300, echo=False)


def test_failing_kernel_test_fails_make_test(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(harness.HarnessError, match=rf"guest {GUEST}: kernel tests failed \(pytest exit 1\): 1 failed"):
        harness.test(GUEST, "tests/harness/guest_failing.py", timeout=300)


@pytest.fixture(scope="module")
def splat_module() -> str:
    """tests/harness/splat_kmod built in the guest (kept with the image's module builds)."""
    result = harness.run(GUEST, "sh tests/harness/splat_kmod/build.sh", timeout=900, echo=False)
    assert result.returncode == 0, result.output
    return result.output.split()[-1]


def test_kernel_warning_stops_the_guest_at_once(splat_module: str) -> None:
    started = time.monotonic()
    with pytest.raises(harness.HarnessError, match=rf"guest {GUEST}: kernel log shows a splat: .*WARNING: CPU: \d+ PID: \d+ at .*kpctl_splat") as exc:
        harness.run(GUEST, f"insmod {splat_module} what=warn; sleep 600", timeout=600, echo=False)
    # Boot, the WARN, the grace for its backtrace: nowhere near the command's 600 s.
    assert time.monotonic() - started < 150
    assert "Call Trace:" in str(exc.value) and "kpctl_splat_init" in str(exc.value)


def test_soft_lockup_stops_the_guest_at_once(splat_module: str) -> None:
    started = time.monotonic()
    # The soft lockup detector reports after twice watchdog_thresh (2 s here, 20 s by
    # default); RCU's stall detector (21 s) may race it on a slow machine.
    with pytest.raises(harness.HarnessError,
                       match=rf"guest {GUEST}: kernel log shows a splat: .*(BUG: soft lockup|detected stall)") as exc:
        harness.run(GUEST, f"sysctl -qw kernel.watchdog_thresh=1; insmod {splat_module} what=softlockup",
                    timeout=600, echo=False)
    assert time.monotonic() - started < 200
    assert "kpctl_splat_init" in str(exc.value)


def test_console_watch_finds_the_first_kernel_splat() -> None:
    watch = harness.ConsoleWatch()
    watch.feed(b"Oops in my own output\n[   12.000001] rcu: INFO: rcu_sched detected stall")
    assert watch.first is None  # no kernel line is complete yet
    watch.feed(b"s on CPUs/tasks:\r\n[   12.000002] Call Trace:\n")
    assert watch.first == "[   12.000001] rcu: INFO: rcu_sched detected stalls on CPUs/tasks:"
    assert watch.excerpt().splitlines()[1] == "[   12.000002] Call Trace:"


EXPECTED_WARN_BLOCK = """\
[    5.000000] kpctl-test: expect warning: Failed to disarm kprobe-ftrace
[    5.100000] ------------[ cut here ]------------
[    5.100001] Failed to disarm kprobe-ftrace at kpctl_target_fn+0x4/0x20 [kpctl_target] (error -2)
[    5.100002] WARNING: CPU: 0 PID: 312 at kernel/kprobes.c:1131 __disarm_kprobe_ftrace+0x10c/0x120
[    5.100003] Call Trace:
[    5.100004] ---[ end trace 0000000000000000 ]---
"""


def test_a_warning_a_test_said_it_expects_is_not_a_splat() -> None:
    end = "[    6.000000] kpctl-test: expected warnings end\n"
    assert harness.splats(EXPECTED_WARN_BLOCK + end) == []
    watch = harness.ConsoleWatch()
    watch.feed((EXPECTED_WARN_BLOCK + end).encode())
    assert watch.first is None


def test_only_the_expected_warning_is_excused() -> None:
    other_warning = EXPECTED_WARN_BLOCK.replace("Failed to disarm kprobe-ftrace at", "refcount_t: underflow at")
    assert harness.splats(other_warning)[0].endswith("WARNING: CPU: 0 PID: 312 at kernel/kprobes.c:1131 "
                                                     "__disarm_kprobe_ftrace+0x10c/0x120")
    oops_inside = EXPECTED_WARN_BLOCK + "[    5.200000] BUG: kernel NULL pointer dereference, address: 0\n"
    assert harness.splats(oops_inside) == ["[    5.200000] BUG: kernel NULL pointer dereference, address: 0"]
    after_the_end = "[    4.0] kpctl-test: expected warnings end\n" + EXPECTED_WARN_BLOCK.split("\n", 1)[1]
    assert len(harness.splats(after_the_end)) == 2  # its WARNING and Call Trace lines


def test_seconds_by_file_sums_a_files_tests_slowest_first(tmp_path: Path) -> None:
    (tmp_path / "test_one.py").write_text("import time\ndef test_a(): time.sleep(0.2)\ndef test_b(): time.sleep(0.2)\n")
    (tmp_path / "test_two.py").write_text("import time\nclass TestC:\n    def test_c(self): time.sleep(0.1)\n")
    junit = tmp_path / "junit.xml"
    # From the folder above, as in a guest (tests.kernel.test_count): pytest's tmp_path is
    # named after this test, test_... too.
    pytest.main(["-q", "-p", "no:cacheprovider", f"--rootdir={tmp_path.parent}", f"--junitxml={junit}",
                 str(tmp_path / "test_one.py"), str(tmp_path / "test_two.py")])
    [(first, slow), (second, fast)] = harness.seconds_by_file(junit.read_text())
    assert (first, second) == ("test_one", "test_two")
    assert slow >= 0.4 and 0.1 <= fast < slow


def test_two_guests_of_one_image_run_at_once_and_keep_both_module_builds() -> None:
    """Two `make vm-run` side by side (on a core each when two are free): each guest
    writes into its own copy of the image's module build folders, and both builds are
    kept whole afterwards (the guests once shared one folder: the last to finish
    emptied it and copied back only its own)."""
    kept = GUEST.image_dir / "kmod-build"
    names = [f"harness-side-by-side-{os.getpid()}-{n}" for n in (1, 2)]
    finished: list[str] = []

    def build(name: str) -> None:
        # A stand-in for a module build: a folder of files, written in the guest.
        result = harness.run(GUEST, f"d=/var/tmp/kpctl-kmod/{name}; mkdir -p $d; for i in $(seq 50); do echo {name} > $d/$i; done; sleep 5",
                             timeout=300, echo=False)
        assert result.returncode == 0, result.output
        finished.append(name)

    threads = [threading.Thread(target=build, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert sorted(finished) == names
        for name in names:
            assert sorted((kept / name).iterdir()) == sorted(kept / name / str(i) for i in range(1, 51))
            assert {(kept / name / str(i)).read_text() for i in range(1, 51)} == {f"{name}\n"}
    finally:
        for name in names:
            shutil.rmtree(kept / name, ignore_errors=True)
