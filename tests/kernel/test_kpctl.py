"""kpctl against a real kernel: each test one behaviour, asserting what the kernel did.

The library is called in-process (Python starts slowly in an emulated guest); only the
signal tests run `python3 -m kpctl` as a process, since signals are what they test.
"""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import emptied_pipe, notrace_candidates, require, tracefs_refuses_as_notrace
from perf import perf_tracepoint

from kpctl.backends.tracefs import TracefsBackend
from kpctl.cli.main import cli
from kpctl.errors import (
    KernelRejectedError,
    ProbeBusyError,
    ProbeNotFoundError,
    UnknownSymbolError,
)
from kpctl.hits import HitStream
from kpctl.model import ArgType, FetchArg, FunctionArgument, Probe, Target, default_event_name, parse_fetch_arg
from kpctl.tracefs import Tracefs, find_tracefs
from kpctl.watch import TracePipeSource, pump

CHECKOUT = Path(__file__).resolve().parents[2]
OTHER_PROBE = "p:other/kpctl_test_keep vfs_write"


@pytest.fixture(scope="session")
def tracefs() -> Tracefs:
    root = Path("/sys/kernel/tracing")
    require(os.geteuid() == 0 and (root / "kprobe_events").exists(), "needs root and kprobe_events (CONFIG_KPROBE_EVENTS)")
    return Tracefs(find_tracefs())


def _kpctl_lines(tracefs: Tracefs) -> list[str]:
    return [line for line in tracefs.read("kprobe_events").splitlines() if ":kpctl/" in line.split(" ", 1)[0]]


@pytest.fixture
def backend(tracefs: Tracefs) -> Iterator[TracefsBackend]:
    """kpctl's backend, with a probe of another group beside it that must survive."""
    assert _kpctl_lines(tracefs) == [], "a kpctl probe was left by an earlier run"
    tracefs.append_command("kprobe_events", OTHER_PROBE)
    try:
        yield TracefsBackend(tracefs)
        assert _kpctl_lines(tracefs) == [], "the test left a kpctl probe behind"
        assert OTHER_PROBE in tracefs.read("kprobe_events").splitlines(), "another group's probe was lost"
    finally:
        if _kpctl_lines(tracefs):  # so that one failure does not cascade into the next tests
            TracefsBackend(tracefs).remove_all()
        tracefs.append_command("kprobe_events", "-:other/kpctl_test_keep")


def probe(target: str, *args: str, ret: bool = False, name: str | None = None) -> Probe:
    place = Target(symbol=target)
    return Probe(
        kind="r" if ret else "p", target=place, event=name or default_event_name(place, ret),
        group="kpctl", args=tuple(parse_fetch_arg(a) for a in args),
    )


def path_arg(tracefs: Tracefs) -> str:
    # The file name is a user pointer: ustring reads user memory on every arch.
    return "path=+0($arg2):ustring" if tracefs.features["ustring"] else "path=+0($arg2):string"


def collect_hits(backend: TracefsBackend, probes: list[Probe], action: object, settle: float = 1.0) -> list[dict]:
    """Run action() while watching; return this process's hits as --json dicts."""
    pipe = emptied_pipe(backend.tracefs, backend.instance)
    assert callable(action)
    action()
    out = io.StringIO()
    stream = HitStream(out, probes, as_json=True, threads={str(os.getpid())})
    with TracePipeSource(pipe) as source:
        pump([source], stream, duration=settle)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_add_defines_probe_in_kpctl_group_and_enables_it(backend: TracefsBackend, tracefs: Tracefs) -> None:
    p = probe("do_sys_openat2", "dfd=$arg1:s32", path_arg(tracefs))
    backend.add([p])
    try:
        assert f"p:kpctl/do_sys_openat2 do_sys_openat2 dfd=$arg1:s32 {path_arg(tracefs)}" in tracefs.read("kprobe_events")
        [info] = backend.list_probes()
        assert (info.name, info.enabled, info.probe.args) == ("do_sys_openat2", True, p.args)
        assert tracefs.read("instances/kpctl/events/kpctl/do_sys_openat2/enable").strip() == "1"
        assert tracefs.read("events/kpctl/do_sys_openat2/enable").strip() == "0", "global buffer untouched"
    finally:
        backend.remove(["do_sys_openat2"])


def test_watch_sees_exactly_the_opens_with_their_path(backend: TracefsBackend, tracefs: Tracefs) -> None:
    p = probe("do_sys_openat2", "dfd=$arg1:s32", path_arg(tracefs))
    backend.add([p])
    with tempfile.NamedTemporaryFile(prefix="kpctl-watch-") as f:
        def open_five_times() -> None:
            for _ in range(5):
                os.close(os.open(f.name, os.O_RDONLY))
        try:
            hits = collect_hits(backend, [p], open_five_times)
        finally:
            backend.remove([p.event or ""])
    mine = [h for h in hits if h["args"]["path"] == f.name]
    assert len(mine) == 5
    assert {h["args"]["dfd"] for h in mine} == {-100}  # AT_FDCWD from open(2)
    assert {h["where"] for h in mine} == {"do_sys_openat2+0x0"}


def test_return_probe_value_is_the_fd_open_returned(backend: TracefsBackend, tracefs: Tracefs) -> None:
    entry = probe("do_sys_openat2", path_arg(tracefs))
    exit_ = probe("do_sys_openat2", "fd=$retval:s32", ret=True)
    backend.add([entry, exit_])
    fds: list[int] = []
    with tempfile.NamedTemporaryFile(prefix="kpctl-ret-") as f:
        def open_and_keep() -> None:
            fds.append(os.open(f.name, os.O_RDONLY))
        try:
            hits = collect_hits(backend, [entry, exit_], open_and_keep)
        finally:
            os.close(fds[0])
            backend.remove(["do_sys_openat2", "do_sys_openat2_ret"])
    at = next(i for i, h in enumerate(hits) if h["probe"] == "do_sys_openat2" and h["args"]["path"] == f.name)
    returned = next(h for h in hits[at:] if h["probe"] == "do_sys_openat2_ret")
    assert returned["args"]["fd"] == fds[0]
    assert returned["where"].endswith("<- do_sys_openat2")


def test_rejected_line_reports_kernel_message_at_its_byte(backend: TracefsBackend) -> None:
    # Built by hand: kpctl's own parser refuses the type before any kernel sees it.
    unknown_type = FetchArg(FunctionArgument(1), "x", ArgType("u7"))
    with pytest.raises(KernelRejectedError) as e:
        backend.add([replace(probe("vfs_read"), args=(unknown_type,))])
    assert e.value.message == "kernel rejected probe kpctl/vfs_read: Unknown type is specified"
    assert e.value.line == "p:kpctl/vfs_read vfs_read x=$arg1:u7"
    assert e.value.offset == e.value.line.index("u7")


def test_several_targets_are_added_all_or_none(backend: TracefsBackend, tracefs: Tracefs) -> None:
    with pytest.raises(UnknownSymbolError):
        backend.add([probe("vfs_read"), probe("vfs_write"), probe("no_such_function_kpctl")])
    assert backend.list_probes() == []


def test_unknown_symbol_suggests_close_names(backend: TracefsBackend) -> None:
    with pytest.raises(UnknownSymbolError) as e:
        backend.add([probe("do_sys_openat3")])
    assert e.value.offset == len("p:kpctl/do_sys_openat3 ")
    assert "do_sys_openat2" in str(e.value.hint)


def test_blacklisted_function_is_refused_and_explained(backend: TracefsBackend, tracefs: Tracefs) -> None:
    symbols = tracefs.symbols
    assert symbols.blacklisted, "debugfs kprobes/blacklist is readable"
    name = next(n for n in sorted(symbols.blacklisted) if n in symbols.by_name and "." not in n and symbols.status(n).module is None)
    with pytest.raises(KernelRejectedError) as e:
        backend.add([probe(name)])
    assert "kprobe blacklist" in str(e.value.hint)


def test_probe_point_inside_an_instruction_is_refused_at_the_target(backend: TracefsBackend) -> None:
    p = Probe("p", Target(symbol="vfs_read", offset=1), event="vfs_read_1", group="kpctl")
    with pytest.raises(KernelRejectedError) as e:
        backend.add([p])
    assert e.value.offset == e.value.line.index("vfs_read+1")


def test_remove_disables_the_event_in_every_instance_first(backend: TracefsBackend, tracefs: Tracefs) -> None:
    backend.add([probe("vfs_read")])
    tracefs.write_value("events/kpctl/vfs_read/enable", "1")  # someone enabled it globally too
    backend.remove(["vfs_read"])
    assert backend.list_probes() == []


def test_event_used_by_perf_is_busy(backend: TracefsBackend, tracefs: Tracefs) -> None:
    backend.add([probe("vfs_read")], enable=False)
    event_id = int(tracefs.read("events/kpctl/vfs_read/id"))
    fd = perf_tracepoint(event_id)
    try:
        with pytest.raises(ProbeBusyError):
            backend.remove(["vfs_read"])
    finally:
        os.close(fd)
        backend.remove(["vfs_read"])


def test_unknown_name_in_rm_fails_and_changes_nothing(backend: TracefsBackend) -> None:
    backend.add([probe("vfs_read")])
    try:
        with pytest.raises(ProbeNotFoundError):
            backend.remove(["vfs_read", "vfs_reed"])
        assert [i.name for i in backend.list_probes()] == ["vfs_read"]
    finally:
        backend.remove(["vfs_read"])


def test_filter_keeps_only_matching_hits(backend: TracefsBackend, tracefs: Tracefs) -> None:
    p = probe("do_sys_openat2", "dfd=$arg1:s32", path_arg(tracefs))
    backend.add([p], event_filter="dfd == 12345")
    try:
        assert backend.list_probes()[0].filter == "dfd == 12345"
        hits = collect_hits(backend, [p], lambda: os.close(os.open("/dev/null", os.O_RDONLY)), settle=0.5)
    finally:
        backend.remove([p.event or ""])
    assert hits == []


def test_bad_filter_is_refused_with_kernel_reason_and_nothing_added(backend: TracefsBackend, tracefs: Tracefs) -> None:
    from kpctl.errors import KernelRejectedError

    assert not tracefs.path("instances/kpctl").exists()
    with pytest.raises(KernelRejectedError) as e:
        backend.add([probe("vfs_read")], event_filter="no_such_field == 1")
    assert e.value.message == "kernel rejected filter: Field not found"
    assert backend.list_probes() == []
    assert not tracefs.path("instances/kpctl").exists(), "the instance made for the filter stayed"


def test_disable_stops_hits_and_enable_resumes(backend: TracefsBackend, tracefs: Tracefs) -> None:
    p = probe("do_sys_openat2", path_arg(tracefs))
    backend.add([p])
    try:
        backend.disable([p.event or ""])
        assert backend.list_probes()[0].enabled is False
        assert collect_hits(backend, [p], lambda: os.close(os.open("/dev/null", os.O_RDONLY)), settle=0.5) == []
        backend.enable([p.event or ""])
        hits = collect_hits(backend, [p], lambda: os.close(os.open("/dev/null", os.O_RDONLY)), settle=0.5)
        assert [h["args"]["path"] for h in hits].count("/dev/null") == 1
    finally:
        backend.remove([p.event or ""])


def test_stats_count_hits_per_probe(backend: TracefsBackend, tracefs: Tracefs) -> None:
    p = probe("do_sys_openat2", path_arg(tracefs))
    backend.add([p])
    try:
        for _ in range(3):
            os.close(os.open("/dev/null", os.O_RDONLY))
        [stats] = backend.stats()
    finally:
        backend.remove([p.event or ""])
    assert stats.name == "do_sys_openat2" and stats.hits >= 3 and stats.misses == 0


def test_kernel_prints_back_what_kpctl_parses(backend: TracefsBackend, tracefs: Tracefs) -> None:
    p = probe("vfs_read", ret=True)
    backend.add([p, probe("do_sys_openat2", "$comm")], enable=False)
    try:
        listed = {i.name: i.probe for i in backend.list_probes()}
    finally:
        backend.remove_all()
    assert listed["vfs_read_ret"].maxactive is not None  # the kernel fills in its default
    assert [str(a) for a in listed["do_sys_openat2"].args] == ["arg1=$comm"]


def test_btf_argument_names_follow_the_readme(backend: TracefsBackend, tracefs: Tracefs) -> None:
    p = probe("vfs_read", "count")
    if tracefs.features["btf_args"]:
        backend.add([p], enable=False)
        backend.remove([p.event or ""])
    else:
        with pytest.raises(KernelRejectedError) as e:
            backend.add([p])
        assert e.value.offset == e.value.line.index("count")


def test_return_probe_argument_follows_the_readme(backend: TracefsBackend, tracefs: Tracefs) -> None:
    p = probe("vfs_read", "$arg1", ret=True)
    if tracefs.features["return_args"]:
        backend.add([p], enable=False)
        backend.remove([p.event or ""])
    else:
        with pytest.raises(KernelRejectedError) as e:
            backend.add([p])
        assert e.value.offset == e.value.line.index("$arg1")
        assert e.value.message.endswith("Invalid $-variable specified")


def test_funcs_explains_blacklisted_missing_and_renamed(tracefs: Tracefs) -> None:
    symbols = tracefs.symbols
    assert symbols.status("vfs_read").probeable
    missing = symbols.status("do_sys_openat3")
    assert not missing.probeable and "do_sys_openat2" in missing.reason
    clone = next(n for n in symbols.functions if ".isra." in n and n.split(".")[0] not in symbols.by_name)
    renamed = symbols.status(clone.split(".")[0])
    assert not renamed.probeable and clone in renamed.reason


def test_funcs_calls_a_function_unprobeable_where_the_kernel_refuses_it_as_notrace(tracefs: Tracefs) -> None:
    """Debian's kernels have no CONFIG_KPROBE_EVENTS_ON_NOTRACE: funcs reads that from
    /boot's config and says what the kernel then does."""
    for name in notrace_candidates()[:400]:
        if tracefs_refuses_as_notrace(name):
            result = CliRunner().invoke(cli, ["funcs", name, "--json"])
            [row] = json.loads(result.output)
            assert row["probeable"] is False, row
            assert row["note"].endswith("the kernel refuses kprobe events there "
                                        "(CONFIG_KPROBE_EVENTS_ON_NOTRACE is not set)"), row
            return
    pytest.fail("no notrace function found among the candidates")


def test_cli_add_list_rm(backend: TracefsBackend) -> None:
    runner = CliRunner()
    added = runner.invoke(cli, ["add", "vfs_read,vfs_write", "count=$arg3:u64"])
    assert added.exit_code == 0, added.output
    listed = runner.invoke(cli, ["list", "--json"])
    rows = json.loads(listed.output)
    assert [(r["name"], r["backend"], r["args"]) for r in rows] == [
        ("vfs_read", "tracefs", "count=$arg3:u64"), ("vfs_write", "tracefs", "count=$arg3:u64"),
    ]
    removed = runner.invoke(cli, ["rm", "--all"])
    assert removed.output == "removed kpctl/vfs_read\nremoved kpctl/vfs_write\n"


def test_cli_error_is_one_line_and_exit_1(backend: TracefsBackend) -> None:
    result = CliRunner().invoke(cli, ["rm", "no_such_probe"])
    assert result.exit_code == 1
    assert result.output.splitlines()[0] == "Error: no probe named no_such_probe in group kpctl"


def test_cli_doctor_passes(tracefs: Tracefs) -> None:
    result = CliRunner().invoke(cli, ["doctor"])
    assert result.exit_code == 0, result.output


def _trace_process(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "kpctl", "trace", *args], cwd=CHECKOUT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(CHECKOUT)},
    )


def _wait_until_watching(proc: subprocess.Popen[str]) -> None:
    """kpctl trace prints its header once it collects hits (Python starts slowly here)."""
    assert proc.stdout is not None
    header = proc.stdout.readline()
    assert header.split()[:2] == ["TIME", "CPU"], (header, proc.communicate())


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_trace_removes_its_probe_on_signal(backend: TracefsBackend, tracefs: Tracefs, signum: int) -> None:
    proc = _trace_process("do_sys_openat2", path_arg(tracefs), "--pid", str(os.getpid()))
    _wait_until_watching(proc)
    os.close(os.open("/dev/null", os.O_RDONLY))
    assert proc.stdout is not None
    assert 'path="/dev/null"' in proc.stdout.readline()
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert err == "1 hits\n"


def test_trace_count_exits_after_n_hits_and_removes_probe(backend: TracefsBackend, tracefs: Tracefs) -> None:
    # The task name is the program's file name: a copy of cat under a name nothing else has.
    subprocess.run(["cp", "/bin/cat", "/tmp/kpctl-test-cat"], check=True)
    proc = _trace_process("do_sys_openat2", path_arg(tracefs), "--count", "2", "--comm", "kpctl-test-cat")
    _wait_until_watching(proc)
    for _ in range(3):
        subprocess.run(["/tmp/kpctl-test-cat", "/dev/null"], check=True)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert err == "2 hits\n"


def test_rm_all_keeps_recording_for_another_group(backend: TracefsBackend, tracefs: Tracefs) -> None:
    other = TracefsBackend(tracefs, group="kpctl_test_other")
    other.add([probe("vfs_write")])
    try:
        backend.add([probe("vfs_read")])
        backend.remove_all()
        assert tracefs.read("instances/kpctl/events/kpctl_test_other/vfs_write/enable").strip() == "1"
    finally:
        other.remove_all()
    assert not tracefs.path("instances/kpctl").exists(), "the last group's removal drops the idle instance"


def _watch_process(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "kpctl", "watch", *args], cwd=CHECKOUT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(CHECKOUT)},
    )


def test_two_watches_at_once_each_see_every_hit(backend: TracefsBackend, tracefs: Tracefs) -> None:
    """trace_pipe gives a hit to one reader: the second watch reads an instance of its own."""
    subprocess.run(["cp", "/bin/cat", "/tmp/kpctl-test-cat"], check=True)
    backend.add([probe("do_sys_openat2", path_arg(tracefs))], event_filter='comm == "kpctl-test-cat"')
    try:
        watches = []
        for _ in range(2):  # one after the other: the first takes kpctl's instance
            watches.append(_watch_process("--count", "3", "--duration", "120"))
            _wait_until_watching(watches[-1])
        own = [p.name for p in tracefs.path("instances").iterdir() if p.name.startswith("kpctl-watch-")]
        assert own == [f"kpctl-watch-{watches[1].pid}"]
        assert tracefs.read(f"instances/{own[0]}/events/kpctl/do_sys_openat2/filter").strip() == 'comm == "kpctl-test-cat"'
        for _ in range(3):
            subprocess.run(["/tmp/kpctl-test-cat", "/dev/null"], check=True)
        for watch in watches:
            out, err = watch.communicate(timeout=120)
            assert (watch.returncode, err) == (0, "3 hits\n")
            assert all("kpctl-test-cat" in line for line in out.splitlines())
    finally:
        backend.remove_all()
    assert not [p for p in tracefs.path("instances").iterdir() if p.name.startswith("kpctl-watch-")]


def test_rm_keeps_a_disabled_probes_filter(backend: TracefsBackend, tracefs: Tracefs) -> None:
    backend.add([probe("vfs_read")])
    backend.add([probe("vfs_write")], enable=False, event_filter="common_pid == 1")
    try:
        backend.remove(["vfs_read"])
        assert [(i.name, i.filter) for i in backend.list_probes()] == [("vfs_write", "common_pid == 1")]
    finally:
        backend.remove_all()
    assert not tracefs.path("instances/kpctl").exists()


def test_enable_disable_and_add_reach_a_second_watch(backend: TracefsBackend, tracefs: Tracefs) -> None:
    """The second watch's own instance follows what kpctl turns on and off."""
    runner = CliRunner()
    backend.add([probe("do_sys_openat2")])
    watches = []
    try:
        for _ in range(2):
            watches.append(_watch_process("--duration", "120"))
            _wait_until_watching(watches[-1])
        own = f"instances/kpctl-watch-{watches[1].pid}/events/kpctl"
        assert tracefs.read(f"{own}/do_sys_openat2/enable").strip() == "1"
        assert runner.invoke(cli, ["disable", "do_sys_openat2"]).exit_code == 0
        assert tracefs.read(f"{own}/do_sys_openat2/enable").strip() == "0"
        assert runner.invoke(cli, ["enable", "do_sys_openat2"]).exit_code == 0
        assert tracefs.read(f"{own}/do_sys_openat2/enable").strip() == "1"
        assert runner.invoke(cli, ["add", "vfs_write", "--filter", "common_pid != 1"]).exit_code == 0
        assert tracefs.read(f"{own}/vfs_write/enable").strip() == "1"
        assert tracefs.read(f"{own}/vfs_write/filter").strip() == "common_pid != 1"
    finally:
        for watch in watches:
            watch.send_signal(signal.SIGINT)
            watch.communicate(timeout=60)
        backend.remove_all()


def test_dry_run_changes_nothing_and_names_where_the_kernel_puts_the_probe(backend: TracefsBackend, tracefs: Tracefs) -> None:
    """The address is kallsyms' symbol plus offset; an x86 kernel with IBT puts a probe
    at +0 past the function's ENDBR64, 4 bytes on (kprobes/list shows it there)."""
    before = tracefs.read("kprobe_events")
    dry = CliRunner().invoke(cli, ["add", "--dry-run", "--json", "vfs_read", "count=$arg3:u64"])
    assert dry.exit_code == 0, dry.output
    planned = json.loads(dry.stdout)
    assert planned["requests"][0] == "p:kpctl/vfs_read vfs_read count=$arg3:u64"
    assert tracefs.read("kprobe_events") == before
    added = CliRunner().invoke(cli, ["add", "vfs_read", "count=$arg3:u64"])
    try:
        assert added.exit_code == 0, added.output
        assert f"{planned['requests'][0]}\n" in tracefs.read("kprobe_events")
        address = int(planned["probes"][0]["address"], 16)
        armed = [s.address for s in tracefs.kprobe_states() if s.where.partition("+")[0] == "vfs_read"]
        assert armed and armed[0] in (address, address + 4), (hex(address), [hex(a) for a in armed])
    finally:
        backend.remove_all()


def test_trace_command_shows_only_the_commands_hits(backend: TracefsBackend, tracefs: Tracefs) -> None:
    """bpftrace -c: kpctl runs the command, shows the hits of its process and ends with
    it. The opens of this test process, going on meanwhile, are not shown."""
    stop = threading.Event()

    def open_meanwhile() -> None:
        while not stop.wait(0.01):
            os.close(os.open("/dev/null", os.O_RDONLY))

    other = threading.Thread(target=open_meanwhile)
    other.start()
    try:
        proc = _trace_process("do_sys_openat2", path_arg(tracefs), "--json", "-c", "cat /etc/hostname")
        out, err = proc.communicate(timeout=120)
    finally:
        stop.set()
        other.join()
    assert proc.returncode == 0, err
    hits = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert hits and {h["comm"] for h in hits} == {"cat"}, hits
    assert "/etc/hostname" in {h["args"]["path"] for h in hits}
    assert err.strip().endswith("cat /etc/hostname exited with status 0"), err


def test_pid_means_every_thread_of_the_process(backend: TracefsBackend, tracefs: Tracefs) -> None:
    proc = _trace_process("do_sys_openat2", path_arg(tracefs), "--pid", str(os.getpid()), "--count", "1", "--json")
    assert proc.stdout is not None
    ready = threading.Event()

    def open_from_a_thread() -> None:
        while not ready.wait(0.05):
            os.close(os.open("/dev/null", os.O_RDONLY))

    thread = threading.Thread(target=open_from_a_thread)
    thread.start()
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        ready.set()
        thread.join()
    assert proc.returncode == 0, err
    [hit] = [json.loads(line) for line in out.splitlines()]
    assert hit["tid"] == thread.native_id != os.getpid()


def test_a_glob_adds_the_probeable_matches_and_the_kernel_takes_every_one(backend: TracefsBackend, tracefs: Tracefs) -> None:
    """Left out are what the kernel would refuse (the blacklist, __init code, names it
    holds twice): one refused line would undo the whole add."""
    result = CliRunner().invoke(cli, ["add", "--disabled", "--json", "vfs_*"])
    try:
        assert result.exit_code == 0, result.output
        # Older clicks' CliRunner mixes stderr (what the glob left out) into stdout.
        added = {row["name"] for row in json.loads(result.output[result.output.index("["):])}
        assert len(added) > 10 and {"vfs_read", "vfs_write"} <= added
        assert {i.name for i in backend.list_probes()} == added
    finally:
        backend.remove_all()


def test_gc_removes_what_a_sigkilled_tracefs_latency_left(backend: TracefsBackend, tracefs: Tracefs) -> None:
    """Its hist triggers with variables hold the instance, the events and the synthetic
    event: gc removes them all, in order, and says so; nothing stays."""
    latency = subprocess.Popen([sys.executable, "-m", "kpctl", "latency", "--engine", "tracefs", "vfs_read"],
                               cwd=CHECKOUT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert latency.stderr is not None and "Ctrl-C ends" in latency.stderr.readline()
    latency.kill()
    latency.communicate(timeout=60)
    group = f"kpctl_lat_{latency.pid}"
    assert f"{group}/" in tracefs.read("kprobe_events") and f"{group}_0" in tracefs.read("synthetic_events")
    result = CliRunner().invoke(cli, ["gc", "--json"])
    assert result.exit_code == 0, result.output
    removed = json.loads(result.output[result.output.index("{"):])["removed"]
    assert sorted(removed) == sorted([f"instance {group}", f"synthetic event {group}_0",
                                      f"probe {group}/vfs_read", f"probe {group}/vfs_read_ret"])
    assert group not in tracefs.read("kprobe_events") and group not in tracefs.read("synthetic_events")
    assert not tracefs.path(f"instances/{group}").exists()


def test_gc_removes_what_sigkilled_kpctls_left(backend: TracefsBackend, tracefs: Tracefs) -> None:
    """A SIGKILLed trace leaves its probe, a SIGKILLed count its group, triggers and
    instance: gc removes exactly those, and list named the trace as the owner before."""
    trace = _trace_process("vfs_read", "--name", "kt_killed")
    _wait_until_watching(trace)
    [row] = [r for r in json.loads(CliRunner().invoke(cli, ["list", "--json"]).stdout) if r["name"] == "kt_killed"]
    assert row["owner"] == f"trace (pid {trace.pid})"
    count = subprocess.Popen([sys.executable, "-m", "kpctl", "count", "--engine", "tracefs", "vfs_read", "vfs_write"],
                             cwd=CHECKOUT,
                             text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert count.stderr is not None and "Ctrl-C ends" in count.stderr.readline()
    for proc in (trace, count):
        proc.kill()
        proc.communicate(timeout=60)
    assert "kt_killed" in tracefs.read("kprobe_events") and f"kpctl_count_{count.pid}/" in tracefs.read("kprobe_events")
    result = CliRunner().invoke(cli, ["gc", "--json"])
    assert result.exit_code == 0, result.output
    removed = json.loads(result.output[result.output.index("{"):])["removed"]
    assert f"instance kpctl_count_{count.pid}" in removed and "probe kpctl/kt_killed" in removed
    assert sorted(r for r in removed if r.startswith("probe kpctl_count_")) == [
        f"probe kpctl_count_{count.pid}/vfs_read", f"probe kpctl_count_{count.pid}/vfs_write"]
    assert OTHER_PROBE in tracefs.read("kprobe_events").splitlines()
    assert "kpctl_count_" not in tracefs.read("kprobe_events") and "kt_killed" not in tracefs.read("kprobe_events")
