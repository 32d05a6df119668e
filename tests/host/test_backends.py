"""Backends: several backends behind one set of commands, each name owned by one."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

import fcntl
import os

from kpctl.backend import WATCH_INSTANCE_PREFIX, Backends, ProbeInfo, ProbeStats
from kpctl.errors import KpctlError, ProbeExistsError, ProbeNotFoundError
from kpctl.model import Probe, Target
from kpctl.tracefs import Tracefs


class MemoryBackend:
    def __init__(self, name: str, pipe: Path) -> None:
        self.name, self.group, self.pipe = name, "kpctl", pipe
        self.probes: dict[str, bool] = {}
        self.calls: list[tuple[str, tuple[str, ...]]] = []
        self.recording: list[str] = []

    def add(self, probes: Sequence[Probe], *, enable: bool = True, event_filter: str | None = None) -> list[ProbeInfo]:
        for p in probes:
            self.probes[p.event or ""] = enable
        return self.list_probes()

    def remove(self, names: Sequence[str]) -> None:
        self.calls.append(("remove", tuple(names)))
        for n in names:
            del self.probes[n]

    def remove_all(self) -> list[str]:
        names = list(self.probes)
        self.probes.clear()
        return names

    def enable(self, names: Sequence[str]) -> None:
        self.calls.append(("enable", tuple(names)))

    def disable(self, names: Sequence[str]) -> None:
        self.calls.append(("disable", tuple(names)))

    def list_probes(self) -> list[ProbeInfo]:
        return [ProbeInfo(Probe("p", Target(n), event=n), on, None, self.name) for n, on in self.probes.items()]

    def stats(self) -> list[ProbeStats]:
        return [ProbeStats(n, 1, 0, self.name) for n in self.probes]

    def hit_pipe(self, clear: bool = True) -> Path:
        return self.pipe

    def record_into(self, instance: str) -> None:
        self.recording.append(instance)


@pytest.fixture
def tracefs(tmp_path: Path) -> Tracefs:
    (tmp_path / "instances/kpctl").mkdir(parents=True)
    (tmp_path / "proc").mkdir()
    return Tracefs(tmp_path, tmp_path, tmp_path / "proc")


@pytest.fixture
def both(tracefs: Tracefs) -> Backends:
    pipe = tracefs.path("instances/kpctl/trace_pipe")
    backends = Backends(tracefs, [MemoryBackend("tracefs", pipe), MemoryBackend("kmod", pipe)])
    backends.add([Probe("p", Target("vfs_read"), event="reads")])
    backends.add([Probe("p", Target("vfs_write"), event="writes")], backend="kmod")
    return backends


def test_list_and_stats_cover_every_backend(both: Backends) -> None:
    assert [(i.name, i.backend) for i in both.list_probes()] == [("reads", "tracefs"), ("writes", "kmod")]
    assert [(s.name, s.backend) for s in both.stats()] == [("reads", "tracefs"), ("writes", "kmod")]


def test_names_go_to_the_backend_that_owns_them(both: Backends) -> None:
    both.disable(["writes", "reads"])
    tracefs, kmod = both.backends
    assert tracefs.calls == [("disable", ("reads",))]  # type: ignore[attr-defined]
    assert kmod.calls == [("disable", ("writes",))]  # type: ignore[attr-defined]


def test_unknown_name_changes_nothing_and_suggests(both: Backends) -> None:
    with pytest.raises(ProbeNotFoundError, match="no probe named read in group kpctl") as e:
        both.remove(["writes", "read"])
    assert e.value.hint == "did you mean: reads?"
    assert [i.name for i in both.list_probes()] == ["reads", "writes"]


def test_a_name_is_owned_by_one_backend(both: Backends) -> None:
    with pytest.raises(ProbeExistsError, match="a probe named reads already exists in backend tracefs"):
        both.add([Probe("p", Target("vfs_read"), event="reads")], backend="kmod")


def test_an_absent_backend_says_how_to_get_it(tracefs: Tracefs) -> None:
    with pytest.raises(KpctlError, match="backend kmod is not available") as e:
        Backends(tracefs, [MemoryBackend("tracefs", tracefs.root)]).add([Probe("p", Target("x"), event="x")], backend="kmod")
    assert e.value.hint == "kpctl_kmod must be loaded first: sudo kpctl kmod load"


def test_remove_all_empties_every_backend(both: Backends) -> None:
    assert both.remove_all() == ["reads", "writes"]
    assert both.list_probes() == []


def test_the_first_watch_reads_kpctls_instance(both: Backends) -> None:
    with both.reading() as pipe:
        assert pipe == both.tracefs.path("instances/kpctl/trace_pipe")
    assert [b.recording for b in both.backends] == [[], []]  # type: ignore[attr-defined]


def test_a_second_watch_reads_an_instance_of_its_own_and_removes_it(both: Backends) -> None:
    own = f"instances/{WATCH_INSTANCE_PREFIX}{os.getpid()}"
    fd = os.open(both.tracefs.path("instances/kpctl"), os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # the first watch
        with both.reading() as pipe:
            assert pipe == both.tracefs.path(f"{own}/trace_pipe")
            assert [b.recording for b in both.backends] == [[own], [own]]  # type: ignore[attr-defined]
    finally:
        os.close(fd)
    assert not both.tracefs.path(own).exists()


def test_a_killed_watchs_instance_is_removed_by_the_next(both: Backends) -> None:
    stale, alive = (both.tracefs.path(f"instances/{WATCH_INSTANCE_PREFIX}{pid}") for pid in (999999, 4242))
    stale.mkdir()
    alive.mkdir()
    (both.tracefs.proc / "4242").mkdir()
    fd = os.open(both.tracefs.path("instances/kpctl"), os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with both.reading():
            pass
    finally:
        os.close(fd)
    assert not stale.exists() and alive.exists()


def test_a_second_watch_with_clear_leaves_the_firsts_hits(tracefs: Tracefs) -> None:
    cleared: list[bool] = []

    class Clearing(MemoryBackend):
        def hit_pipe(self, clear: bool = True) -> Path:
            cleared.append(clear)
            return self.pipe

    backends = Backends(tracefs, [Clearing("tracefs", tracefs.path("instances/kpctl/trace_pipe"))])
    fd = os.open(tracefs.path("instances/kpctl"), os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with backends.reading(clear=True):
            pass
    finally:
        os.close(fd)
    assert cleared == [False]
    with backends.reading(clear=True):
        pass
    assert cleared == [False, False, True]
