"""Loading and unloading kpctl_kmod: the probe limit, status, and rmmod while probes are
armed, hit, and a reader sits in trace_pipe."""
from __future__ import annotations

import errno
import struct
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from kmod_fixtures import (  # noqa: F401 (fixtures)
    NLM_F_DUMP,
    NLM_F_REQUEST,
    WORKLOAD_SYSCALL,
    RawGenl,
    built_module,
    ensure_loaded,
    genl_message,
    kernel_log,
    kmod,
    reload_after,
    splats_since,
    syscall_symbol,
    trace_instance,
)

from kpctl.cli.main import cli
from kpctl.kmod import client as client_module
from kpctl.kmod import loader
from kpctl.kmod.build import KmodBuildError
from kpctl.kmod.client import KmodClient, KmodError, KmodNotLoadedError
from kpctl.kmod.messages import Cmd, Kind, KmodProbe


def test_status_of_the_loaded_module(kmod: KmodClient) -> None:
    status = loader.status()
    assert status.loaded and (status.max_probes, status.max_instances) == (128, 16384)
    assert status.module == built_module().module


def test_probe_limit(kmod: KmodClient, reload_after: None) -> None:
    loader.unload()
    loader.load(built_module().module, {"max_probes": 2})
    with KmodClient() as client:
        client.add(syscall_symbol(WORKLOAD_SYSCALL), "kt_a")
        client.add(syscall_symbol("getppid"), "kt_b")
        with pytest.raises(KmodError, match="too many probes") as e:
            client.add(syscall_symbol("getpid"), "kt_c")
        assert e.value.errno == errno.ENOSPC
        assert [p.name for p in client.dump()] == ["kt_a", "kt_b"]


def test_rmmod_with_armed_probes_and_a_reader(kmod: KmodClient, trace_instance: Path, reload_after: None) -> None:
    before = len(kernel_log())
    # vfs_read is hit all the time, not least by the trace_pipe reader itself.
    kmod.add("vfs_read", "kt_read")
    kmod.add("vfs_read", "kt_read_ret", kind=Kind.RETURN)
    with open("/tmp/kt_reader.out", "wb") as sink:
        reader = subprocess.Popen(["cat", str(trace_instance / "trace_pipe")], stdout=sink)
    workload = subprocess.Popen(["sh", "-c", "while :; do cat /proc/version; done"], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while b"kretprobe_hit" not in Path("/tmp/kt_reader.out").read_bytes():
            assert time.monotonic() < deadline, "no hits reached trace_pipe"
            time.sleep(0.2)
        loader.unload()
        assert not loader.is_loaded()
        time.sleep(0.5)
        # Removing the module's events resets the trace buffers with recording paused
        # (tracing_reset_all_online_cpus()); a blocking reader that has read before may
        # see tracing off in that moment and get end-of-file (tracing_wait_pipe()). It
        # must not die otherwise. kpctl's own reader is non-blocking and never sees that.
        assert reader.poll() in (None, 0), f"the trace_pipe reader died with the module: {reader.returncode}"
    finally:
        workload.kill()
        reader.kill()
        workload.wait()
        reader.wait()
    with pytest.raises(KmodNotLoadedError):
        KmodClient()
    assert splats_since(before) == []


def test_cli_unload_drops_kpctls_idle_instance(kmod: KmodClient, reload_after: None) -> None:
    runner = CliRunner()
    added = runner.invoke(cli, ["add", "--backend", "kmod", syscall_symbol(WORKLOAD_SYSCALL), "--name", "kt_unload"])
    assert added.exit_code == 0, added.output
    instance = Path("/sys/kernel/tracing/instances/kpctl")
    assert (instance / "events/kpctl_kmod/enable").read_text().strip() == "1"
    unloaded = runner.invoke(cli, ["kmod", "unload"])
    assert (unloaded.exit_code, unloaded.output) == (0, "unloaded kpctl_kmod\n")
    assert not instance.exists()


def test_dump_is_one_view_while_another_client_changes_probes(
    kmod: KmodClient, reload_after: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Enough probes for a dump of several parts, and a second client that removes low
    ids and adds the same names back with new ones: without NLM_F_DUMP_INTR and the
    client's retry, a dump could send such a name once in each part."""
    loader.unload()
    loader.load(built_module().module, {"max_probes": 400})
    with KmodClient() as client:
        made = add_many(client, 300)
        stop = threading.Event()

        def churn() -> None:
            # Bursts of changes with quiet spells between them, in which a dump that a
            # burst interrupted can be taken again.
            with KmodClient() as other:
                current = {p.name: p for p in made[:5]}
                while not stop.wait(0.5):
                    for name, probe in list(current.items()):
                        other.remove(probe.id)
                        current[name] = other.add(probe.symbol, name, enabled=False)

        retries: list[float] = []
        monkeypatch.setattr(client_module, "time", SimpleNamespace(sleep=retries.append))
        churner = threading.Thread(target=churn)
        churner.start()
        try:
            for _ in range(10):
                names = [p.name for p in client.dump()]
                assert len(names) == len(set(names)) == 300
        finally:
            stop.set()
            churner.join()
        assert retries, "no dump was interrupted: the test did not test the retry"


def add_many(client: KmodClient, count: int) -> list[KmodProbe]:
    """count disabled entry probes on syscalls, enough to make a dump of several parts."""
    prefix = syscall_symbol("")
    syscalls = sorted({line.split()[2] for line in Path("/proc/kallsyms").read_text().splitlines()
                       if line.split()[2].startswith(prefix) and line.split()[1] in "tT"})
    made: list[KmodProbe] = []
    for symbol in syscalls:
        try:
            made.append(client.add(symbol, f"kt_d{len(made)}", enabled=False))
        except KmodError:
            continue  # a syscall kprobes will not take: another serves
        if len(made) == count:
            return made
    raise AssertionError(f"only {len(made)} syscalls took a probe")


def test_half_read_dump_holds_the_module(kmod: KmodClient, reload_after: None) -> None:
    loader.unload()
    loader.load(built_module().module, {"max_probes": 400})
    with KmodClient() as client:
        add_many(client, 300)
        family = client.family_id
    raw = RawGenl()
    try:
        raw.sock.send(genl_message(family, Cmd.GET, flags=NLM_F_REQUEST | NLM_F_DUMP))
        first = raw.sock.recv(65536)
        assert struct.unpack_from("=H", first, 4)[0] == family  # probes, not the end
        # An open dump holds a reference on the module: no unload under its feet.
        with pytest.raises(KmodBuildError, match="in use"):
            loader.unload()
    finally:
        raw.close()
    deadline = time.monotonic() + 10
    while loader.is_loaded():  # the socket's release drops the dump's reference
        try:
            loader.unload()
        except KmodBuildError:
            assert time.monotonic() < deadline, "the module stayed in use after the dump's socket closed"
            time.sleep(0.1)


def test_rmmod_racing_requests(kmod: KmodClient, reload_after: None) -> None:
    """Clients add, remove and dump while the module is unloaded under them: each
    request either completes or fails cleanly, and nothing is left in the kernel."""
    symbol = syscall_symbol(WORKLOAD_SYSCALL)
    stop = threading.Event()
    failures: list[BaseException] = []

    def client(index: int) -> None:
        while not stop.is_set():
            try:
                with KmodClient() as c:
                    probe = c.add(symbol, f"kt_race{index}", kind=Kind.RETURN if index % 2 else Kind.ENTRY)
                    c.dump()
                    c.remove(probe.id)
            except (KmodError, KmodNotLoadedError):
                pass  # the module went away mid-request
            except BaseException as e:  # noqa: BLE001 (reported by the test)
                failures.append(e)
                return

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(1)
        deadline = time.monotonic() + 30
        while loader.is_loaded():
            try:
                loader.unload()
            except KmodBuildError:  # a dump held it for a moment
                assert time.monotonic() < deadline
                time.sleep(0.05)
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == []
    assert f" {symbol}+" not in Path("/sys/kernel/debug/kprobes/list").read_text()


def test_pending_return_instances_across_remove_and_rmmod(kmod: KmodClient, reload_after: None) -> None:
    """A return probe whose function is still running when the probe and then the
    module go: the return must come back safely (kretprobe instances outlive both)."""
    symbol = syscall_symbol("clock_nanosleep")
    probe = kmod.add(symbol, "kt_pending", kind=Kind.RETURN)
    sleeper = subprocess.Popen(["sleep", "3"])
    deadline = time.monotonic() + 20
    # A call entered and not returned: the sleeper's (this test's own sleeps return).
    while (got := kmod.get(probe.id)).ret_hits == got.hits:
        assert time.monotonic() < deadline, "sleep never entered clock_nanosleep"
        time.sleep(0.05)
    kmod.remove(probe.id)
    loader.unload()
    assert sleeper.wait(timeout=30) == 0
    # The workload goes on through the same function afterwards.
    assert subprocess.run(["sleep", "0.1"], check=False).returncode == 0
