"""ProbeManager: several backends behind one set of commands, each name owned by one;
short_lived() probes."""
from __future__ import annotations

import fcntl
import os
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from kpctl.backends.base import ProbeInfo, ProbeStats
from kpctl.errors import KpctlError, ProbeExistsError, ProbeNotFoundError
from kpctl.hits import ProbeNamer
from kpctl.manager import ProbeManager, short_lived
from kpctl.model import Probe, Target
from kpctl.sessions import Session
from kpctl.signals import StopRequested
from kpctl.tracefs import KPCTL_INSTANCE, Tracefs
from kpctl.watch import HitSource, TracePipeSource


class FakeTracefs(Tracefs):
    """A directory whose instances have the files the kernel gives one."""

    def make_instance(self, relative: str) -> None:
        super().make_instance(relative)
        for name in ("trace", "trace_pipe"):
            self.path(f"{relative}/{name}").touch()

    def remove_instance(self, relative: str) -> bool:
        for file in self.path(relative).glob("*"):
            file.unlink()
        return super().remove_instance(relative)


class MemoryBackend:
    def __init__(self, name: str) -> None:
        self.name, self.group = name, "kpctl"
        self.hits_in_tracefs = True
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

    def record_into(self, instance: str) -> None:
        self.recording.append(instance)

    def probe_namers(self) -> Mapping[str, ProbeNamer]:
        return {}

    def hit_sources(self) -> list[HitSource]:
        return []


@pytest.fixture
def tracefs(tmp_path: Path) -> Tracefs:
    (tmp_path / "instances").mkdir()
    (tmp_path / "proc").mkdir()
    return FakeTracefs(tmp_path, tmp_path, tmp_path / "proc")


@pytest.fixture
def both(tracefs: Tracefs) -> ProbeManager:
    manager = ProbeManager(tracefs, [MemoryBackend("tracefs"), MemoryBackend("kmod")], "kpctl")
    manager.add([Probe("p", Target("vfs_read"), event="reads")])
    manager.add([Probe("p", Target("vfs_write"), event="writes")], backend="kmod")
    return manager


def test_list_and_stats_cover_every_backend(both: ProbeManager) -> None:
    assert [(i.name, i.backend) for i in both.list_probes()] == [("reads", "tracefs"), ("writes", "kmod")]
    assert [(s.name, s.backend) for s in both.stats()] == [("reads", "tracefs"), ("writes", "kmod")]


def test_names_go_to_the_backend_that_owns_them(both: ProbeManager) -> None:
    both.disable(["writes", "reads"])
    tracefs, kmod = both.backends
    assert tracefs.calls == [("disable", ("reads",))]  # type: ignore[attr-defined]
    assert kmod.calls == [("disable", ("writes",))]  # type: ignore[attr-defined]


def test_unknown_name_changes_nothing_and_suggests(both: ProbeManager) -> None:
    with pytest.raises(ProbeNotFoundError, match="no probe named read in group kpctl") as e:
        both.remove(["writes", "read"])
    assert e.value.hint == "did you mean: reads?"
    assert [i.name for i in both.list_probes()] == ["reads", "writes"]


def test_a_name_is_owned_by_one_backend(both: ProbeManager) -> None:
    with pytest.raises(ProbeExistsError, match="a probe named reads already exists in backend tracefs"):
        both.add([Probe("p", Target("vfs_read"), event="reads")], backend="kmod")


def test_an_absent_backend_says_why_from_the_registry(tracefs: Tracefs, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("kpctl.kmod.SYSFS", tracefs.path("no-such-module"))
    monkeypatch.setattr("kpctl.kmod.modules_supported", lambda: True)  # whatever this host's kernel
    with pytest.raises(KpctlError, match="^backend kmod is not available: kpctl_kmod is not loaded$") as e:
        ProbeManager(tracefs, [MemoryBackend("tracefs")], "kpctl").add([Probe("p", Target("x"), event="x")], backend="kmod")
    assert e.value.hint == "sudo kpctl kmod build && sudo kpctl kmod load"


def test_remove_all_empties_every_backend(both: ProbeManager) -> None:
    assert both.remove_all() == ["reads", "writes"]
    assert both.list_probes() == []


def _pipes(sources: list[HitSource]) -> list[Path]:
    return [Path(os.readlink(f"/proc/self/fd/{s.fileno()}")) for s in sources if isinstance(s, TracePipeSource)]


def test_the_first_watch_reads_kpctls_instance(both: ProbeManager) -> None:
    with both.reading() as sources:
        assert _pipes(sources) == [both.tracefs.path(f"{KPCTL_INSTANCE}/trace_pipe")]
    assert [b.recording for b in both.backends] == [[], []]  # type: ignore[attr-defined]


def _first_watch(manager: ProbeManager) -> int:
    """A descriptor holding the lock the first watch holds."""
    manager.tracefs.make_instance(KPCTL_INSTANCE)
    fd = os.open(manager.tracefs.path(KPCTL_INSTANCE), os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def test_a_second_watch_reads_an_instance_of_its_own_and_removes_it(both: ProbeManager) -> None:
    own = Session.mine("watch").instance
    fd = _first_watch(both)
    try:
        with both.reading() as sources:
            assert _pipes(sources) == [both.tracefs.path(f"{own}/trace_pipe")]
            assert [b.recording for b in both.backends] == [[own], [own]]  # type: ignore[attr-defined]
    finally:
        os.close(fd)
    assert not both.tracefs.path(own).exists()


def test_a_killed_watchs_instance_gets_no_new_probe_and_is_gcs(both: ProbeManager, tmp_path: Path) -> None:
    from kpctl.gc import collect
    from kpctl.owners import Owners

    stale, alive = (Session("watch", pid).instance for pid in (999999, 4242))
    both.tracefs.make_instance(stale)
    both.tracefs.make_instance(alive)
    (both.tracefs.proc / "4242").mkdir()
    both.add([Probe("p", Target("vfs_fsync"), event="syncs")])
    assert both.backends[0].recording == [alive]  # type: ignore[attr-defined]
    assert collect(both.tracefs, Owners(tmp_path / "owners", both.tracefs.proc)).removed == [
        f"instance {stale.removeprefix('instances/')}"]
    assert not both.tracefs.path(stale).exists() and both.tracefs.path(alive).exists()


def test_only_the_first_watch_drops_unread_hits(both: ProbeManager) -> None:
    trace = both.tracefs.path(f"{KPCTL_INSTANCE}/trace")
    fd = _first_watch(both)
    trace.write_text("unread\n")
    try:
        with both.reading(drop_unread=True):
            pass
    finally:
        os.close(fd)
    assert trace.read_text() == "unread\n"
    with both.reading(drop_unread=True):
        pass
    assert trace.read_text() == "\n"  # what write_value() leaves: the kernel empties the buffer


def test_short_lived_probes_go_on_sigterm(both: ProbeManager) -> None:
    probe = Probe("p", Target("vfs_fsync"), event="syncs")
    with pytest.raises(StopRequested):
        with short_lived(both, [probe]):
            assert "syncs" in [i.name for i in both.list_probes()]
            os.kill(os.getpid(), signal.SIGTERM)
    assert "syncs" not in [i.name for i in both.list_probes()]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


@pytest.mark.parametrize(("signum", "raised"), [(signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, StopRequested)])
def test_a_signal_during_the_removal_waits_for_it_then_stops(
    both: ProbeManager, monkeypatch: pytest.MonkeyPatch, signum: int, raised: type[BaseException],
) -> None:
    """Not lost: a bench whose Ctrl-C landed in a row's removal went on to its end."""
    real_remove = both.remove

    def remove_while_signalled(names: Sequence[str]) -> None:
        os.kill(os.getpid(), signum)
        real_remove(names)  # not cut short: the signal waits

    monkeypatch.setattr(both, "remove", remove_while_signalled)
    # Ctrl-C as a terminal delivers it: a shell's background job (CI's) ignores SIGINT.
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(raised):
            with short_lived(both, [Probe("p", Target("vfs_fsync"), event="syncs")]):
                pass
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, before)
    assert [i.name for i in both.list_probes()] == ["reads", "writes"]


def test_short_lived_probes_go_on_an_error(both: ProbeManager) -> None:
    with pytest.raises(RuntimeError):
        with short_lived(both, [Probe("p", Target("vfs_fsync"), event="syncs")]):
            raise RuntimeError
    assert [i.name for i in both.list_probes()] == ["reads", "writes"]


def test_a_watch_of_a_backend_without_trace_events_makes_no_instance(tracefs: Tracefs) -> None:
    class OwnSource:
        def fileno(self) -> int:
            return 0

        def read_into(self, sink: object) -> bool:
            return False

    class Buffered(MemoryBackend):
        def hit_sources(self) -> list[HitSource]:
            return [OwnSource()]

    bpf = Buffered("bpf")
    bpf.hits_in_tracefs = False
    manager = ProbeManager(tracefs, [MemoryBackend("tracefs"), bpf], "kpctl")
    with manager.reading(backends={"bpf"}) as sources:
        assert [type(s).__name__ for s in sources] == ["OwnSource"]
    assert not tracefs.path(KPCTL_INSTANCE).exists()
