"""kpctl count, hist, latency and stacks on a real kernel, through kpctl's own BPF
programs and tracefs hist triggers, and where they must agree through bcc's too: a
known workload counted exactly, split as asked, the same by every engine, and nothing
left behind: no probe, trigger, synthetic event or instance. kpctl's own engine runs
with bcc hidden from its Python: it needs no compiler."""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import require
from kmod_fixtures import WORKLOAD_SYSCALL, KmodClient, kmod, run_workload, syscall_symbol  # noqa: F401 (a fixture)

from kpctl.kmod.messages import BENCH_RECURSIVE
from kpctl.tracefs import Tracefs, find_tracefs

CHECKOUT = Path(__file__).resolve().parents[2]
CALLS = 50
KPROBES_LIST = Path("/sys/kernel/debug/kprobes/list")
ENGINES = ["bpf", "tracefs"]
# What every engine must count the same (a count, buckets, stacks): bcc compiles for
# seconds per command, so only these.
AGREEING = ["bpf", "bcc", "tracefs"]
HIDE_BCC = "import sys; sys.modules['bcc'] = None; from kpctl.cli.main import main; main()"


def kprobes() -> list[list[str]]:
    """The kernel's kprobes (address, kind, place), BPF's included; not their flags,
    which change when the optimizer runs."""
    return [line.split()[:3] for line in KPROBES_LIST.read_text().splitlines()]


def nothing_left(tracefs: Tracefs, probes_before: list[list[str]]) -> None:
    assert kprobes() == probes_before, "counting left a kprobe behind"
    for prefix in ("kpctl_count_", "kpctl_lat_"):
        assert prefix not in tracefs.read("kprobe_events"), "counting left a probe behind"
        assert not [d for d in tracefs.path("instances").iterdir() if d.name.startswith(prefix)], \
            "counting left its instance behind"
    assert "kpctl_" not in tracefs.read("synthetic_events"), "latency left its synthetic event behind"


def usable_tracefs() -> Tracefs:
    tracefs = Tracefs(find_tracefs())
    require(os.geteuid() == 0 and tracefs.path("kprobe_events").exists(), "needs root and kprobe_events")
    return tracefs


def require_engine(engine: str, tracefs: Tracefs) -> None:
    if engine == "bpf":
        from kpctl.aggregation.bpf import availability

        available = availability()
        require(available.usable, available.detail)
    elif engine == "bcc":
        require(importlib.util.find_spec("bcc") is not None, "needs bcc (python3-bpfcc)")
    else:
        require("hist:" in tracefs.readme, "needs hist triggers (CONFIG_HIST_TRIGGERS)")


@pytest.fixture
def tracefs() -> Iterator[Tracefs]:
    tracefs = usable_tracefs()
    probes_before = kprobes()
    yield tracefs
    nothing_left(tracefs, probes_before)


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest, tracefs: Tracefs) -> str:
    require_engine(request.param, tracefs)
    return str(request.param)


@pytest.fixture(params=AGREEING)
def every_engine(request: pytest.FixtureRequest, tracefs: Tracefs) -> str:
    require_engine(request.param, tracefs)
    return str(request.param)


@dataclass(frozen=True)
class Counted:
    """One counting command that several tests look at: a BPF compile costs seconds
    under emulation, so what one run can show is not paid for twice."""
    engine: str
    returncode: int
    tables: list[dict[str, Any]]
    err: list[str]


def counted(engine: str, *args: str, workload: int = CALLS, end: signal.Signals | None = None,
            timeout: float = 120) -> Counted:
    """count ARGS through engine around workload calls, ended by a signal or its -d;
    nothing may be left afterwards."""
    tracefs = usable_tracefs()
    require_engine(engine, tracefs)
    probes_before = kprobes()
    proc = count(engine, *args)
    begun = started(proc)
    run_workload(workload)
    if end is not None:
        proc.send_signal(end)
    out, err = proc.communicate(timeout=timeout)
    nothing_left(tracefs, probes_before)
    assert proc.returncode == 0, err
    return Counted(engine, proc.returncode, [json.loads(line) for line in out.splitlines()], begun + err.splitlines())


def kpctl(engine: str, *args: str, as_json: bool = True) -> subprocess.Popen[str]:
    start = ["-c", HIDE_BCC] if engine == "bpf" else ["-m", "kpctl"]
    return subprocess.Popen([sys.executable, *start, *args, "--engine", engine, *(["--json"] * as_json)],
                            cwd=CHECKOUT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def count(engine: str, *args: str) -> subprocess.Popen[str]:
    return kpctl(engine, "count", *args)


def started(proc: subprocess.Popen[str]) -> list[str]:
    """The counting commands say so on stderr once counting has begun (bcc compiles
    first: slow under emulation), after any note on what a glob left out: the lines
    read until then."""
    assert proc.stderr is not None
    lines = [proc.stderr.readline()]
    while lines[-1].startswith("kpctl: the globs leave out "):
        lines.append(proc.stderr.readline())
    assert "; Ctrl-C ends" in lines[-1], (lines, proc.communicate())
    return [line.rstrip("\n") for line in lines]


@pytest.fixture(scope="module", params=AGREEING)
def counted_by_pid(request: pytest.FixtureRequest) -> Counted:
    """count --by pid of the workload, ended by SIGTERM."""
    return counted(request.param, syscall_symbol(WORKLOAD_SYSCALL), "--by", "pid", "-d", "600", end=signal.SIGTERM)


def test_count_by_pid_is_exact_for_this_process(counted_by_pid: Counted) -> None:
    [table] = counted_by_pid.tables
    assert table["engine"] == counted_by_pid.engine and table["by"] == "pid"
    mine = [row for row in table["counts"] if row["by"].endswith(f" {os.getpid()}")]
    assert [row["hits"] for row in mine] == [CALLS], table


def test_sigterm_ends_counting_and_cleans_up(counted_by_pid: Counted) -> None:
    # counted() checked that nothing is left; SIGTERM still prints the final table.
    assert counted_by_pid.returncode == 0
    assert counted_by_pid.tables[-1]["counts"][0]["function"] == syscall_symbol(WORKLOAD_SYSCALL)


def glob_of_both_kinds() -> tuple[str, list[str], dict[str, str]]:
    """A glob of this kernel's that names probeable and unprobeable functions, few
    enough to attach quickly."""
    symbols = usable_tracefs().symbols
    for pattern in ("kprobe_*", "*_int3_*", "arch_*", "do_*", "vfs_*"):
        kept, left = symbols.probeable_matches(pattern)
        if left and 0 < len(kept) <= 60:
            return pattern, kept, left
    pytest.fail("no glob here names both probeable and unprobeable functions")


@pytest.fixture(scope="module", params=ENGINES)
def counted_globs(request: pytest.FixtureRequest) -> tuple[Counted, dict[str, str]]:
    """The workload's glob and one that leaves functions out, counted for 3 s."""
    pattern, _, left = glob_of_both_kinds()
    return counted(request.param, syscall_symbol("sched_get_priority_m*"), pattern, "-d", "3", timeout=300), left


def test_count_of_a_glob_with_a_duration_totals_per_function(counted_globs: tuple[Counted, dict[str, str]]) -> None:
    [table] = counted_globs[0].tables
    hits = {row["function"]: row["hits"] for row in table["counts"]}
    assert hits[syscall_symbol(WORKLOAD_SYSCALL)] >= CALLS
    # Counted, never called: no zero row (as funccount), the number of such functions instead.
    assert syscall_symbol("sched_get_priority_min") not in hits and table["not_hit"] >= 1


def test_a_glob_that_names_unprobeable_functions_counts_the_rest_and_says_so(
        counted_globs: tuple[Counted, dict[str, str]]) -> None:
    run, left = counted_globs
    assert f"kpctl: the globs leave out {len(left)} functions (kpctl funcs tells why)" in run.err
    [table] = run.tables
    assert set(left).isdisjoint(row["function"] for row in table["counts"])


def test_count_by_stack_names_the_syscall_path(tracefs: Tracefs, engine: str) -> None:
    proc = count(engine, syscall_symbol(WORKLOAD_SYSCALL), "--by", "stack", "-i", "1", "-d", "3")
    started(proc)
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        run_workload(5)
        time.sleep(0.1)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    tables = [json.loads(line) for line in out.splitlines()]
    assert len(tables) >= 2  # one per interval
    stacks = [row["by"] for t in tables for row in t["counts"]]
    assert stacks and any("do_syscall_64" in s or "el0_svc" in s for s in stacks), stacks


def test_hist_of_read_sizes_puts_each_in_its_power_of_two(tracefs: Tracefs, engine: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.write_bytes(b"x" * 5000)
    proc = kpctl(engine, "hist", "ksys_read", "size=$arg3:u64")
    started(proc)
    with data.open("rb", buffering=0) as f:
        for _ in range(7):
            f.seek(0)
            f.read(3000)  # 3000 is in 2049..4096
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    buckets = {(b["low"], b["high"]): b["hits"] for b in json.loads(out)["buckets"]}
    assert buckets[(2049, 4096)] >= 7, buckets


def test_hist_of_a_return_value_uses_a_return_probe(tracefs: Tracefs, engine: str) -> None:
    symbol = syscall_symbol(WORKLOAD_SYSCALL)
    proc = kpctl(engine, "hist", symbol, "ret=$retval:u64", "-d", "600")
    started(proc)
    try:
        if engine == "tracefs":
            [line] = [line for line in tracefs.read("kprobe_events").splitlines() if f"kpctl_count_{proc.pid}/" in line]
            assert line.startswith("r") and f" {symbol} ret=$retval:u64" in line, line
        else:  # a perf kretprobe: "r" in debug/kprobes/list (at +0x4 past an ENDBR on 6.12)
            kinds = [line.split()[1] for line in KPROBES_LIST.read_text().splitlines() if f" {symbol}+" in line]
            assert "r" in kinds, kinds
        run_workload(CALLS)  # returns 99: bucket 65..128
    finally:
        proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    buckets = {(b["low"], b["high"]): b["hits"] for b in json.loads(out)["buckets"]}
    assert buckets[(65, 128)] >= CALLS, buckets


def test_stacks_folded_end_at_the_function(tracefs: Tracefs, every_engine: str) -> None:
    engine = every_engine
    symbol = syscall_symbol(WORKLOAD_SYSCALL)
    proc = kpctl(engine, "stacks", symbol, "--folded", "-d", "600", as_json=False)
    started(proc)
    run_workload(CALLS)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert lines and sum(int(line.rsplit(" ", 1)[1]) for line in lines) >= CALLS
    # Root first, every stack ends at the probed function (not in the kprobe's own
    # handlers, which the kernel records above it).
    for line in lines:
        frames = [f.split("+", 1)[0] for f in line.rsplit(" ", 1)[0].split(";")]
        assert frames[-1] == symbol, lines


def timed_sleeps(engine: str, *options: str) -> str:
    """kpctl latency's JSON output over eight 10 ms sleeps of this process."""
    proc = kpctl(engine, "latency", syscall_symbol("clock_nanosleep"), *options, "-d", "600")  # time.sleep()'s
    started(proc)
    for _ in range(8):
        time.sleep(0.010)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return out


@pytest.mark.parametrize(("unit", "bucket"), [([], (8388609, 16777216))], ids=["ns"])
def test_latency_of_a_10_ms_sleep_lands_in_its_bucket(tracefs: Tracefs, every_engine: str, unit: list[str],
                                                      bucket: tuple[int, int]) -> None:
    engine = every_engine
    [table] = [json.loads(line) for line in timed_sleeps(engine, *unit).splitlines()]
    buckets = {(b["low"], b["high"]): b["calls"] for b in table["buckets"]}
    # Most of the sleeps there (other tasks sleep too, for other times).
    assert buckets.get(bucket, 0) >= 6, buckets


@pytest.mark.parametrize("engine", ["tracefs"], indirect=True)  # the format is the CLI's: one engine is enough
def test_count_in_the_prometheus_format(tracefs: Tracefs, engine: str) -> None:
    symbol = syscall_symbol(WORKLOAD_SYSCALL)
    proc = kpctl(engine, "count", symbol, "--format", "prometheus", "-d", "600", as_json=False)
    started(proc)
    run_workload(CALLS)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out.startswith("# HELP kpctl_count_hits ")
    [sample] = [line for line in out.splitlines() if line.startswith("kpctl_count_hits{")]
    assert f'function="{symbol}"' in sample and f'engine="{engine}"' in sample
    assert int(sample.rsplit(" ", 1)[1]) >= CALLS


def test_latency_in_millis_split_by_comm(tracefs: Tracefs) -> None:
    require_engine("bpf", tracefs)
    tables = {t["key"]: t for t in map(json.loads, timed_sleeps("bpf", "-m", "--by", "comm").splitlines())}
    assert tables["python3"]["unit"] == "msecs" and tables["python3"]["by"] == "comm"
    buckets = {(b["low"], b["high"]): b["calls"] for b in tables["python3"]["buckets"]}
    assert buckets.get((9, 16), 0) >= 6, buckets  # 10 ms and a little


def test_a_glob_over_more_functions_than_max_functions_is_refused_before_any_probe(tracefs: Tracefs, engine: str) -> None:
    proc = count(engine, "vfs_*", "--max-functions", "3", "-d", "1")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    # With --json the error is JSON too; the fixture checks that no kprobe was made.
    assert json.loads(out)["error"].endswith(" functions asked for, more than --max-functions 3")


@pytest.mark.parametrize("every_engine", ["tracefs"], indirect=True)  # bpf's units: the -m test above
def test_latency_in_micros_lands_in_its_bucket(tracefs: Tracefs, every_engine: str) -> None:
    test_latency_of_a_10_ms_sleep_lands_in_its_bucket(tracefs, every_engine, ["-u"], (8193, 16384))


@pytest.mark.parametrize("engine", ["bpf"], indirect=True)
def test_latency_and_stacks_in_the_prometheus_format(tracefs: Tracefs, engine: str) -> None:
    symbol = syscall_symbol(WORKLOAD_SYSCALL)
    for command, metric in (("latency", "kpctl_latency_bucket{"), ("stacks", "kpctl_stack_hits{")):
        proc = kpctl(engine, command, symbol, "--format", "prometheus", "-d", "600", as_json=False)
        started(proc)
        run_workload(CALLS)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        samples = [line for line in out.splitlines() if line.startswith(metric)]
        assert samples and f'engine="{engine}"' in samples[0], out
        assert max(int(float(line.rsplit(" ", 1)[1])) for line in samples) >= CALLS, out


def test_latency_of_a_recursion_times_the_calls_its_engine_can_tell_apart(
        tracefs: Tracefs, engine: str, kmod: KmodClient) -> None:  # noqa: F811
    """The module's recursive function, 4 calls deep per iteration: the bpf engine keeps
    an entry time per call depth and times every call; hist triggers keep one per
    thread, read once by the first return, so only the innermost call is timed."""
    iterations, depth = 20, 3
    proc = kpctl(engine, "latency", BENCH_RECURSIVE, "-d", "600")
    started(proc)
    kmod.bench(iterations, depth=depth)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    [table] = [json.loads(line) for line in out.splitlines()]
    timed = sum(b["calls"] for b in table["buckets"])
    assert timed == {"bpf": iterations * (depth + 1), "tracefs": iterations}[engine], table


@pytest.mark.parametrize("end", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_nothing_of_the_bpf_engine_outlives_its_process(tracefs: Tracefs, end: signal.Signals) -> None:
    """Its maps, programs, perf kprobes and links are file descriptors of the process:
    Ctrl-C and SIGTERM close them, and so does the kernel after a SIGKILL."""
    require_engine("bpf", tracefs)
    before = kprobes()
    proc = count("bpf", syscall_symbol(WORKLOAD_SYSCALL), "-d", "600")
    started(proc)
    assert kprobes() != before, "the bpf engine counts through a perf kprobe, which debug/kprobes/list shows"
    proc.send_signal(end)
    proc.communicate(timeout=60)
    deadline = time.monotonic() + 5  # the last fd's release may end after the exit is seen
    while kprobes() != before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert kprobes() == before


def test_the_bpf_engine_counts_a_glob_exactly_through_one_attach(tracefs: Tracefs) -> None:
    """Several functions through one kprobe_multi link where the kernel has fprobe
    (nothing in debug/kprobes/list then), a perf kprobe each elsewhere: each function
    counted exactly, as the tracefs engine counts it."""
    require_engine("bpf", tracefs)
    fprobe = "f[:[<group>/][<event>]]" in tracefs.readme  # CONFIG_FPROBE_EVENTS, which needs CONFIG_FPROBE
    found = {}
    for engine in ENGINES:
        before = kprobes()
        proc = count(engine, syscall_symbol("sched_get_priority_m*"), "--by", "pid", "-d", "600")
        started(proc)
        if engine == "bpf":
            assert (kprobes() == before) == fprobe, "one kprobe_multi link where there is fprobe, kprobes elsewhere"
        run_workload(CALLS)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        [table] = [json.loads(line) for line in out.splitlines()]
        found[engine] = [(row["function"], row["hits"]) for row in table["counts"] if row["by"].endswith(f" {os.getpid()}")]
    assert found["bpf"] == found["tracefs"] == [(syscall_symbol(WORKLOAD_SYSCALL), CALLS)], found


def test_count_by_an_argument_keys_each_value_as_its_type_prints_it(tracefs: Tracefs, engine: str, tmp_path: Path) -> None:
    """--by a fetch argument: ksys_read's fd, made 777 here (no other task reads through
    such an fd), counted exactly and printed as s32."""
    data = tmp_path / "data"
    data.write_bytes(b"x" * 100)
    proc = count(engine, "ksys_read", "--by", "fd=$arg1:s32", "-d", "600")
    started(proc)
    with data.open("rb", buffering=0) as f:
        os.dup2(f.fileno(), 777)
        try:
            for _ in range(7):
                os.read(777, 10)  # read(2) goes through ksys_read
        finally:
            os.close(777)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    [table] = [json.loads(line) for line in out.splitlines()]
    assert [row["hits"] for row in table["counts"] if row["by"] == "777"] == [7], table
