"""kpctl_kmod behind kpctl's backend interface and `kpctl kmod status`: probes from the
probe model, all-or-nothing adds, stats, and hits arriving in the backend's trace_pipe
in the shape the hit parser reads."""
from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from kmod_fixtures import TRACEFS, WORKLOAD_RESULT, WORKLOAD_SYSCALL, kmod, run_workload, syscall_symbol  # noqa: F401

from kpctl.errors import ProbeNotFoundError
from kpctl.hits import HitParser
from kpctl.kmod.backend import KmodBackend
from kpctl.kmod.cli import kmod as kmod_cli
from kpctl.kmod.client import KmodClient, KmodError
from kpctl.model import Probe, Target
from kpctl.tracefs import Tracefs

INSTANCE = "kpctl_kmod_test_backend"


@pytest.fixture
def backend(kmod: KmodClient) -> Iterator[KmodBackend]:
    backend = KmodBackend(Tracefs(TRACEFS), group="kpctl", instance=INSTANCE)
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
    pipe = backend.hit_pipe()
    run_workload(3)
    hits = list(HitParser().hits(read_pipe(pipe, 6)))
    assert sorted((h.event, h.args["name"]) for h in hits) == (
        [("kprobe_hit", "kt_e")] * 3 + [("kretprobe_hit", "kt_r")] * 3)
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
