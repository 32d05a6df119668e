"""The counting engines without a kernel: which one a command gets, the BPF program each
request compiles to with bcc, what kpctl's own programs refuse, and how the map keys read. The programs themselves
run in the kernel tests (tests/kernel/test_count.py)."""
from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NamedTuple

import pytest

from kpctl.aggregation.bcc import BccHitCounter, BccLatencyTimer
from kpctl.aggregation.bpf import BpfHitCounter
from kpctl.aggregation.counts import Count
from kpctl.aggregation.hist_triggers import HitCounter, LatencyTimer, from_function
from kpctl.cli import main as cli_module
from kpctl.counting import choose_engine
from kpctl.ebpf.programs import this_arch
from kpctl.errors import KpctlError, UsageError
from kpctl.registry import Availability
from kpctl.signals import StopRequested
from kpctl.tracefs import Tracefs


def tracefs_with(tmp_path: Path, readme: str) -> Tracefs:
    (tmp_path / "README").write_text(readme)
    (tmp_path / "kprobe_events").write_text("")
    return Tracefs(tmp_path)


@pytest.fixture
def no_bpf(monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither BPF engine works: kpctl's programs do not load, bcc is not installed."""
    import kpctl.aggregation.bpf
    import kpctl.counting

    monkeypatch.setattr(kpctl.aggregation.bpf, "availability",
                        lambda: Availability(False, "the kernel refused to load a BPF program: Operation not permitted"))
    kind = kpctl.counting.backend_type("bpf")
    monkeypatch.setattr(kpctl.counting, "backend_type", lambda name: kind._replace(
        availability=lambda tracefs: Availability(False, "bcc is not installed for this Python", "apt install python3-bpfcc")))


def test_without_bcc_hist_triggers_count(tmp_path: Path, no_bpf: None) -> None:
    assert choose_engine(tracefs_with(tmp_path, "hist:keys=<field1[,field2,...]>\n"), None).name == "tracefs"


def test_an_engine_asked_for_that_cannot_work_says_why(tmp_path: Path, no_bpf: None) -> None:
    with pytest.raises(KpctlError) as e:
        choose_engine(tracefs_with(tmp_path, "hist:keys=<field1[,field2,...]>\n"), "bcc")
    assert str(e.value) == "engine bcc does not work here: bcc is not installed for this Python"
    assert e.value.hint == "apt install python3-bpfcc"


def test_no_engine_at_all_names_each_reason(tmp_path: Path, no_bpf: None) -> None:
    with pytest.raises(KpctlError) as e:
        choose_engine(tracefs_with(tmp_path, "no triggers here\n"), None)
    assert str(e.value) == ("no counting engine works here (bpf: the kernel refused to load a BPF program: "
                            "Operation not permitted; bcc: bcc is not installed for this Python; "
                            "tracefs: tracefs has no hist triggers)")


def test_each_function_gets_its_own_bpf_function() -> None:
    counter = BccHitCounter(["vfs_read", "vfs_write"], by="stack")
    assert counter.program.probes == [("vfs_read", "kpctl_probe_0", False), ("vfs_write", "kpctl_probe_1", False)]
    assert counter.program.text.count("kpctl_stacks.get_stackid(ctx, 0)") == 2
    assert "BPF_STACK_TRACE(kpctl_stacks" in counter.program.text


def test_a_stack_map_only_where_stacks_are_counted() -> None:
    # It preallocates about 10 MB of kernel memory.
    assert "BPF_STACK_TRACE" not in BccHitCounter(["vfs_read"]).program.text
    assert "BPF_STACK_TRACE" not in BccLatencyTimer(["vfs_read"], by="comm").program.text


def test_a_histogram_of_the_return_value_uses_return_probes_and_buckets_it() -> None:
    counter = BccHitCounter(["vfs_read"], by="ret=$retval:s64", log2=True)
    assert counter.program.probes == [("vfs_read", "kpctl_probe_0", True)]
    assert "key.value = PT_REGS_RC(ctx);\n    key.slot = kpctl_log2_up(key.value);" in counter.program.text


def test_latency_arms_returns_before_entries_and_divides_by_its_unit() -> None:
    timer = BccLatencyTimer(["vfs_read", "vfs_write"], unit="usecs", by="comm")
    assert [(bpf_function, is_return) for _, bpf_function, is_return in timer.program.probes] == [
        ("kpctl_return_0", True), ("kpctl_return_1", True), ("kpctl_entry_0", False), ("kpctl_entry_1", False)]
    assert timer.program.text.count("(now - *start) / 1000;") == 2


@pytest.mark.parametrize(("make", "message"), [
    (lambda: BccLatencyTimer(["vfs_read"], by="stack"), "latency splits by pid, comm or cpu, not stack"),
    (lambda: BccHitCounter(["vfs_read"], by="pid", log2=True), "a histogram needs a numeric fetch argument, not pid"),
    (lambda: BpfHitCounter(Tracefs(Path("/nonexistent")), ["vfs_read"], by="x", log2=True),
     "FETCHARG x: a histogram's fetch argument needs a name, NAME=FETCH[:TYPE]"),
    (lambda: HitCounter(Tracefs(Path("/nonexistent")), ["vfs_read"], by="comm", log2=True),
     "a histogram needs a numeric fetch argument, not comm"),
    (lambda: BccHitCounter(["vfs_read+4"]), "the bcc engine probes functions by name, not vfs_read+4"),
    (lambda: BccHitCounter(["vfs_read"], by="+0($arg2):u64"),
     "--by +0($arg2):u64: a fetch argument to count by needs a name"),
    (lambda: BccHitCounter(["vfs_read"], by="p=+0($arg2):u64"),
     "the bpf backend fetches $arg1..$arg6, $retval and $comm, not +0($arg2)"),
    (lambda: BpfHitCounter(Tracefs(Path("/nonexistent")), ["vfs_read"], by="p=$arg2:string"),
     "the bpf engine counts by integer types (u32, s64, x64, ...), not string"),
    (lambda: BpfHitCounter(Tracefs(Path("/nonexistent")), ["vfs_read"], by="p=@jiffies:u64"),
     "the bpf engine fetches $arg1..$arg{args}, $retval, $stackN, %REG, @ADDR, +OFFS(...) and $comm, not @jiffies"),
    (lambda: BpfHitCounter(Tracefs(Path("/nonexistent")), ["vfs_read", "vfs_read"]), "a function is given twice"),
    (lambda: LatencyTimer(Tracefs(Path("/nonexistent")), ["vfs_read"], by="pid"), "latency --by needs the bpf engine"),
    (lambda: LatencyTimer(Tracefs(Path("/nonexistent")), ["vfs_read"], unit="msecs"),
     "hist triggers time in nsecs or usecs, not msecs"),
])
def test_what_an_engine_cannot_do_is_refused_before_anything_runs(make: Any, message: str) -> None:
    with pytest.raises(UsageError) as e:
        make()
    assert str(e.value) == message.replace("{args}", str(len(this_arch().args)))


class MapKey(NamedTuple):  # struct kpctl_key
    probe: int
    slot: int
    value: int
    comm: bytes


class FakeTable(dict[Any, Any]):
    def Key(self, n: int) -> int:  # noqa: N802 (bcc's name)
        return n

    def walk(self, stack_id: int) -> list[int]:
        return [0x10, 0x20] if stack_id == 7 else []


class FakeBpf:
    """The few parts of a bcc.BPF object that reading counts uses."""

    def __init__(self, counts: dict[tuple[int, int, int, bytes], int], dropped: int = 0) -> None:
        keys = {MapKey(*key): SimpleNamespace(value=n) for key, n in counts.items()}
        self.tables = {"kpctl_counts": FakeTable(keys), "kpctl_dropped": FakeTable({0: SimpleNamespace(value=dropped)}),
                       "kpctl_stacks": FakeTable()}

    def __getitem__(self, name: str) -> FakeTable:
        return self.tables[name]

    @staticmethod
    def ksym(address: int, show_offset: bool) -> bytes:
        return {0x10: b"vfs_read+0x4", 0x20: b"ksys_read+0x6b"}[address]


def test_counts_read_as_hist_triggers_print_them() -> None:
    counter = BccHitCounter(["vfs_read", "vfs_write"], by="pid")
    counter.program.bpf = FakeBpf({(0, 0, 365, b"cat"): 3, (1, 0, 12, b"sh"): 5}, dropped=2)
    assert counter.counts() == ([Count("vfs_write", "sh 12", 5), Count("vfs_read", "cat 365", 3)], 2)


def test_without_by_every_function_has_a_total() -> None:
    counter = BccHitCounter(["vfs_read", "vfs_write"])
    counter.program.bpf = FakeBpf({(0, 0, 0, b""): 4})
    assert counter.counts() == ([Count("vfs_read", None, 4), Count("vfs_write", None, 0)], 0)


def test_stack_keys_are_symbolized_leaf_first_and_lost_ones_said() -> None:
    counter = BccHitCounter(["vfs_read"], by="stack")
    counter.program.bpf = FakeBpf({(0, 0, 7, b""): 9, (0, 0, (1 << 64) - 17, b""): 1})
    assert counter.counts()[0] == [Count("vfs_read", "vfs_read+0x4;ksys_read+0x6b", 9),
                                   Count("vfs_read", "[stack lost]", 1)]


def test_an_argument_key_prints_as_its_type_and_a_bucket_as_hist_triggers_do() -> None:
    counter = BccHitCounter(["vfs_read"], by="fd=$arg1:s32")
    counter.program.bpf = FakeBpf({(0, 0, 0xFFFFFFFF, b""): 2})
    assert counter.counts()[0] == [Count("vfs_read", "-1", 2)]
    timer = BccLatencyTimer(["vfs_read"], by="cpu")
    timer.program.bpf = FakeBpf({(0, 5, 1, b""): 3})
    assert timer.counts()[0] == [Count("vfs_read", "~ 2^5", 3, "1")]


def test_a_hist_trigger_stack_starts_at_the_probed_function() -> None:
    # As 6.1 on x86 records it from an ftrace-based kprobe (examples/counting.sh).
    leaf_first = ("kprobe_ftrace_handler+0x10b;0xffffffffc03220c8;__x64_sys_clock_nanosleep+0x5;"
                  "do_syscall_64+0x5d;entry_SYSCALL_64_after_hwframe+0x6e")
    assert from_function(leaf_first, "__x64_sys_clock_nanosleep") == (
        "__x64_sys_clock_nanosleep+0x5;do_syscall_64+0x5d;entry_SYSCALL_64_after_hwframe+0x6e")
    assert from_function("a+0x1;b+0x2", "elsewhere") == "a+0x1;b+0x2"


class StoppedCounting:
    """Counts one hit; a signal lands while arming, or while the removal holds it back."""
    engine = "tracefs"

    def __init__(self, stopped_while: str) -> None:
        self.stopped_while = stopped_while
        self.hits = 0

    @contextmanager
    def counting(self) -> Iterator[None]:
        if self.stopped_while == "arming":
            raise KeyboardInterrupt
        yield
        raise StopRequested  # what signals_held() delivers once the probes are gone

    def counts(self) -> tuple[list[Count], int]:
        counts = [Count("vfs_read", None, self.hits)]
        self.hits += 1  # one more hit by the next read
        return counts, 0


@pytest.mark.parametrize("stopped_while", ["arming", "removing"])
def test_a_signal_in_arming_or_removal_ends_counting_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stopped_while: str,
) -> None:
    monkeypatch.setattr(cli_module, "collect_garbage", lambda tracefs: [])
    shown: list[list[Count]] = []

    def count() -> None:
        cli_module.run_counting(StoppedCounting(stopped_while), tracefs_with(tmp_path, ""), 1, 0.01, None,
                                lambda counts, dropped: shown.append(counts))

    if stopped_while == "arming":
        with pytest.raises(KpctlError, match=r"^stopped: everything it set up is removed$"):
            count()
        assert shown == []
    else:
        count()  # the counts are out: the signal ends nothing more, and no traceback
        assert shown == [[Count("vfs_read", None, 1)]]


class UnbuildableBpf:
    """bcc.BPF without kernel headers: it says so on fd 1, then the build fails."""

    def __init__(self, text: str) -> None:
        os.write(1, b"Unable to find kernel headers.\n")
        raise Exception("Failed to compile BPF module <text>")


def test_a_program_that_does_not_build_says_why_in_its_error_only(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(sys.modules, "bcc", SimpleNamespace(BPF=UnbuildableBpf))
    with pytest.raises(KpctlError) as e, BccLatencyTimer(["vfs_read"]).counting():
        pass
    assert capfd.readouterr() == ("", "")
    assert (str(e.value), e.value.hint) == ("bcc could not build the BPF program: Failed to compile BPF module <text>",
                                            "Unable to find kernel headers.")


@pytest.mark.parametrize("verbose", [False, True])
def test_the_verifiers_log_is_shown_only_under_verbose(monkeypatch: pytest.MonkeyPatch, verbose: bool) -> None:
    from click.testing import CliRunner

    from kpctl.ebpf.syscalls import BpfError

    log = "0: (85) call bpf_get_attach_cookie#174\nunknown func bpf_get_attach_cookie#174\n"

    def refused() -> Tracefs:
        raise BpfError("the verifier refused kpctl's BPF program kpctl_count: unknown func bpf_get_attach_cookie#174",
                       22, "kpctl -v shows the verifier's log", log)

    monkeypatch.setattr(cli_module, "open_tracefs", refused)
    result = CliRunner().invoke(cli_module.cli, [*(["-v"] * verbose), "count", "vfs_read"])
    assert result.exit_code == 1
    assert (log in result.output) == verbose
    assert result.output.endswith("Error: the verifier refused kpctl's BPF program kpctl_count: unknown func "
                                  "bpf_get_attach_cookie#174\nkpctl -v shows the verifier's log\n")


def test_a_signal_whose_handler_has_not_run_yet_still_ends_the_counting_sleep() -> None:
    """The race time.sleep() loses: the C handler ran (the wakeup fd written) just
    before the sleep began, the Python handler not yet. The sleep must end at once."""
    import signal
    import time

    from kpctl.signals import interruptible_sleep

    with interruptible_sleep() as sleep:
        wakeup = signal.set_wakeup_fd(-1)
        signal.set_wakeup_fd(wakeup, warn_on_full_buffer=False)
        os.write(wakeup, bytes([signal.SIGTERM]))
        began = time.monotonic()
        sleep(30)
        assert time.monotonic() - began < 5
    assert signal.set_wakeup_fd(-1) == -1  # put back as it was


def test_a_count_table_shows_only_what_was_hit_and_says_how_many_were_not() -> None:
    from kpctl.aggregation.counts import count_table

    counts = [Count("vfs_read", None, 7), Count("vfs_write", None, 0), Count("vfs_open", None, 2)]
    assert count_table(counts, 5, None, None) == (
        [{"function": "vfs_read", "hits": 7}, {"function": "vfs_open", "hits": 2}], 3)
    assert count_table(counts, 5, None, 1) == ([{"function": "vfs_read", "hits": 7}], 3)
    by_comm = [Count("vfs_read", "cat", 3), Count("vfs_read", "sh", 1)]
    assert count_table(by_comm, 2, "comm", None) == (
        [{"function": "vfs_read", "by": "cat", "hits": 3}, {"function": "vfs_read", "by": "sh", "hits": 1}], 1)
