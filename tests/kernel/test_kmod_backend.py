"""kpctl_kmod behind kpctl's backend interface and `kpctl kmod status`: probes from the
probe model, all-or-nothing adds, stats, and hits arriving in the backend's trace_pipe
in the shape the hit parser reads."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import emptied_pipe
from kmod_fixtures import TRACEFS, WORKLOAD_RESULT, WORKLOAD_SYSCALL, kmod, run_workload, syscall_symbol  # noqa: F401

from kpctl.backends.kmod import PROBE_NAMERS, KmodBackend
from kpctl.cli.kmod import kmod as kmod_cli
from kpctl.cli.main import cli
from kpctl.errors import ProbeNotFoundError
from kpctl.hits import HitParser
from kpctl.kmod.client import KmodClient, KmodError
from kpctl.model import Probe, Target
from kpctl.tracefs import Tracefs

INSTANCE = "kpctl_kmod_test_backend"


@pytest.fixture
def backend(kmod: KmodClient) -> Iterator[KmodBackend]:
    backend = KmodBackend(Tracefs(TRACEFS), group="kpctl", instance=f"instances/{INSTANCE}")
    yield backend
    backend.close()
    instance = TRACEFS / "instances" / INSTANCE
    if instance.exists():
        instance.rmdir()


def workload_probe(kind: str, name: str) -> Probe:
    return Probe("r" if kind == "r" else "p", Target(symbol=syscall_symbol(WORKLOAD_SYSCALL)), event=name)


def read_pipe(pipe: Path, hits: int, timeout: float = 30) -> str:
    fd = os.open(pipe, os.O_RDONLY | os.O_NONBLOCK)
    text = ""
    deadline = time.monotonic() + timeout
    try:
        while text.count("\n") < hits and time.monotonic() < deadline:
            try:
                text += os.read(fd, 65536).decode()
            except BlockingIOError:
                time.sleep(0.1)
    finally:
        os.close(fd)
    return text


def test_add_is_all_or_nothing(backend: KmodBackend) -> None:
    bad = Probe("p", Target(symbol="kpctl_no_such_function"), event="kt_bad")
    with pytest.raises(KmodError, match="symbol not in kallsyms"):
        backend.add([workload_probe("p", "kt_good"), bad])
    assert backend.list_probes() == []


def test_hits_arrive_in_the_pipe(backend: KmodBackend) -> None:
    infos = backend.add([workload_probe("p", "kt_e"), workload_probe("r", "kt_r")])
    assert [(i.name, i.backend, i.enabled, i.probe.is_return) for i in infos] == [
        ("kt_e", "kmod", True, False), ("kt_r", "kmod", True, True)]
    pipe = emptied_pipe(backend.tracefs, backend.instance)
    run_workload(3)
    hits = list(HitParser(namers=PROBE_NAMERS).hits(read_pipe(pipe, 6)))
    assert sorted((h.event, h.is_return, "name" in h.args) for h in hits) == (
        [("kt_e", False, False)] * 3 + [("kt_r", True, False)] * 3)
    assert {h.args["ret"] for h in hits if h.is_return} == {WORKLOAD_RESULT}
    assert [(s.name, s.hits, s.misses) for s in backend.stats()] == [("kt_e", 3, 0), ("kt_r", 3, 0)]


def test_enable_disable_remove_by_name(backend: KmodBackend) -> None:
    backend.add([workload_probe("p", "kt_x")], enable=False)
    assert [(i.enabled, i.kprobe_flags[:1]) for i in backend.list_probes()] == [(False, ("DISABLED",))]
    backend.enable(["kt_x"])
    assert backend.list_probes()[0].enabled
    with pytest.raises(ProbeNotFoundError):
        backend.remove(["kt_nope"])
    assert backend.remove_all() == ["kt_x"]


def test_status_lists_the_probes(kmod: KmodClient) -> None:
    kmod.add(syscall_symbol(WORKLOAD_SYSCALL), "kt_status")
    result = CliRunner().invoke(kmod_cli, ["status", "--json"])
    assert result.exit_code == 0, result.output
    status = json.loads(result.output)
    assert status["loaded"] and [p["name"] for p in status["probes"]] == ["kt_status"]


CHECKOUT = Path(__file__).resolve().parents[2]


def kpctl(*args: str) -> str:
    """kpctl's CLI in this process; its output, after asserting success."""
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_cli_manages_and_watches_both_backends_together(kmod: KmodClient) -> None:
    runner = CliRunner()
    symbol = syscall_symbol(WORKLOAD_SYSCALL)
    kpctl("add", "--backend", "kmod", "--ret", symbol, "--name", "kt_cli_ret")
    try:
        kpctl("add", symbol, "--name", "kt_cli_entry")
        taken = runner.invoke(cli, ["add", "--backend", "kmod", symbol, "--name", "kt_cli_entry"])
        assert taken.exit_code == 1
        assert taken.output.startswith("Error: a probe named kt_cli_entry already exists in backend tracefs\n")
        rows = json.loads(kpctl("list", "--json"))
        assert [(r["name"], r["backend"], r["kind"]) for r in rows] == [
            ("kt_cli_entry", "tracefs", "entry"), ("kt_cli_ret", "kmod", "return")]

        watch = subprocess.Popen(
            [sys.executable, "-m", "kpctl", "watch", "--count", "6", "--duration", "120"],
            cwd=CHECKOUT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        assert watch.stdout is not None
        assert watch.stdout.readline().split()[:2] == ["TIME", "CPU"]
        run_workload(3)
        out, err = watch.communicate(timeout=120)
        assert (watch.returncode, err) == (0, "6 hits\n")
        probes = sorted(line.split()[4] for line in out.splitlines())
        assert probes == ["kt_cli_entry"] * 3 + ["kt_cli_ret"] * 3
        assert all(f"ret={WORKLOAD_RESULT} " in line for line in out.splitlines() if " kt_cli_ret " in line)

        kmod_stats = [r for r in json.loads(kpctl("stats", "--json")) if r["backend"] == "kmod"]
        assert kmod_stats == [{"name": "kt_cli_ret", "backend": "kmod", "hits": 3, "misses": 0}]
        kpctl("disable", "kt_cli_ret", "kt_cli_entry")
        assert [r["enabled"] for r in json.loads(kpctl("list", "--json"))] == [False, False]
    finally:
        removed = kpctl("rm", "--all")
    assert removed == "removed kpctl/kt_cli_entry\nremoved kpctl/kt_cli_ret\n"
    assert kmod.dump() == [] and json.loads(kpctl("list", "--json")) == []


def test_removing_the_last_tracefs_probe_keeps_recording_module_hits(kmod: KmodClient) -> None:
    symbol = syscall_symbol(WORKLOAD_SYSCALL)
    kpctl("add", "--backend", "kmod", symbol, "--name", "kt_kept")
    try:
        kpctl("add", symbol, "--name", "kt_gone")
        kpctl("rm", "kt_gone")
        # Before any watch, and in another process (watch leaves out its own): the
        # hits wait in kpctl's instance.
        subprocess.run([sys.executable, "-c", "import os\nfor _ in range(2): os.sched_get_priority_max(os.SCHED_FIFO)"], check=True)
        out = kpctl("watch", "--count", "2", "--duration", "30")
        header, *hits, summary = out.splitlines()
        assert [line.split()[4] for line in hits] == ["kt_kept"] * 2 and summary == "2 hits"
    finally:
        kpctl("rm", "--all")
    assert not (TRACEFS / "instances" / "kpctl").exists(), "rm --all leaves no idle instance behind"


def test_gc_removes_the_module_probe_of_a_sigkilled_trace_and_list_names_its_owner_before(kmod: KmodClient) -> None:  # noqa: F811
    proc = subprocess.Popen([sys.executable, "-m", "kpctl", "trace", "--backend", "kmod", "vfs_read", "--name", "kt_killed_kmod"],
                            cwd=Path(__file__).resolve().parents[2], text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().split()[:2] == ["TIME", "CPU"], proc.communicate()
    [row] = [r for r in json.loads(CliRunner().invoke(cli, ["list", "--json"]).stdout) if r["name"] == "kt_killed_kmod"]
    assert (row["backend"], row["owner"]) == ("kmod", f"trace (pid {proc.pid})")
    proc.kill()
    proc.communicate(timeout=60)
    assert [p.name for p in kmod.dump()] == ["kt_killed_kmod"]
    result = CliRunner().invoke(cli, ["gc", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output[result.output.index("{"):])["removed"] == ["module probe kt_killed_kmod"]
    assert kmod.dump() == []
