"""Loading and unloading kpctl_kmod: the probe limit, status, and rmmod while probes are
armed, hit, and a reader sits in trace_pipe."""
from __future__ import annotations

import errno
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from kmod_fixtures import (  # noqa: F401 (fixtures)
    WORKLOAD_SYSCALL,
    built_module,
    ensure_loaded,
    kernel_log,
    kmod,
    splats_since,
    syscall_symbol,
    trace_instance,
)

from kpctl.cli import cli
from kpctl.kmod import build
from kpctl.kmod import client as client_module
from kpctl.kmod.client import KmodClient, KmodError, KmodNotLoadedError
from kpctl.kmod.messages import Kind, KmodProbe


@pytest.fixture
def reload_after(kmod: KmodClient) -> Iterator[None]:
    """The test unloads the module; load it again, with its defaults, for the next test."""
    yield
    if build.is_loaded():
        build.unload()
    ensure_loaded()


def test_status_of_the_loaded_module(kmod: KmodClient) -> None:
    status = build.status()
    assert status.loaded and status.max_probes == 128
    assert status.module == built_module().module


def test_probe_limit(kmod: KmodClient, reload_after: None) -> None:
    build.unload()
    build.load(built_module().module, {"max_probes": 2})
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
        build.unload()
        assert not build.is_loaded()
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
    build.unload()
    build.load(built_module().module, {"max_probes": 400})
    prefix = syscall_symbol("")
    syscalls = sorted({line.split()[2] for line in Path("/proc/kallsyms").read_text().splitlines()
                       if line.split()[2].startswith(prefix) and line.split()[1] in "tT"})
    with KmodClient() as client:
        made: list[KmodProbe] = []
        for symbol in syscalls:
            try:
                made.append(client.add(symbol, f"kt_d{len(made)}", enabled=False))
            except KmodError:
                continue  # a syscall kprobes will not take: another serves
            if len(made) == 300:
                break
        assert len(made) == 300
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

        retries = []
        monkeypatch.setattr(client_module, "time", SimpleNamespace(sleep=retries.append))
        churner = threading.Thread(target=churn)
        churner.start()
        try:
            for _ in range(20):
                names = [p.name for p in client.dump()]
                assert len(names) == len(set(names)) == 300
        finally:
            stop.set()
            churner.join()
        assert retries, "no dump was interrupted: the test did not test the retry"
