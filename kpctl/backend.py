"""What a probe backend offers: the tracefs one (kpctl/tracefs.py) writes kprobe_events,
others (a kernel module over netlink) plug in behind the same interface. Hits of every
backend are read as trace_pipe text from a tracefs instance, so watch works for all."""
from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from kpctl.errors import KpctlError, ProbeExistsError, check_probe_names
from kpctl.model import Probe

if TYPE_CHECKING:
    from kpctl.tracefs import Tracefs

# A watch that starts while another reads kpctl's instance reads one of its own, named so.
WATCH_INSTANCE_PREFIX = "kpctl-watch-"


@dataclass(frozen=True)
class ProbeInfo:
    """A probe as a backend knows it: its definition and its state."""
    probe: Probe
    enabled: bool
    filter: str | None
    backend: str
    # The kprobe's own state from debug/kprobes/list: FTRACE, OPTIMIZED, DISABLED, ...
    kprobe_flags: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.probe.event or ""


@dataclass(frozen=True)
class ProbeStats:
    name: str
    hits: int
    misses: int  # hits the kernel could not record (kretprobe maxactive too small, reentrancy)
    backend: str


class Backend(Protocol):
    """Probes of one group, managed by one mechanism. Every method that changes state is
    all-or-nothing: on an error nothing of that call stays behind."""

    name: str
    group: str

    def add(self, probes: Sequence[Probe], *, enable: bool = True, event_filter: str | None = None) -> list[ProbeInfo]: ...

    def remove(self, names: Sequence[str]) -> None: ...

    def remove_all(self) -> list[str]: ...

    def enable(self, names: Sequence[str]) -> None: ...

    def disable(self, names: Sequence[str]) -> None: ...

    def list_probes(self) -> list[ProbeInfo]: ...

    def stats(self) -> list[ProbeStats]: ...

    def hit_pipe(self, clear: bool = True) -> Path:
        """The trace_pipe where this backend's hits arrive; with clear, emptied of the
        hits nobody has read yet."""
        ...

    def record_into(self, instance: str) -> None:
        """Turn on, in another tracefs instance (instances/NAME), the events of this
        backend's enabled probes."""
        ...


class Backends:
    """Several backends seen as one, for the commands that show and change probes of all
    of them (list, stats, rm, enable, disable, watch). A name belongs to one backend:
    add refuses a name another backend already has."""

    name = "all"

    def __init__(self, tracefs: Tracefs, backends: Sequence[Backend]) -> None:
        self.tracefs = tracefs
        self.backends = list(backends)
        self.group = self.backends[0].group

    def backend(self, name: str) -> Backend:
        for backend in self.backends:
            if backend.name == name:
                return backend
        raise KpctlError(f"backend {name} is not available", "kpctl_kmod must be loaded first: sudo kpctl kmod load")

    def add(self, probes: Sequence[Probe], *, enable: bool = True, event_filter: str | None = None,
            backend: str = "tracefs") -> list[ProbeInfo]:
        target = self.backend(backend)
        with self.tracefs.changing():  # the names checked are still free when added
            for other in self.backends:
                if other is target:
                    continue
                taken = {i.name for i in other.list_probes()}
                for probe in probes:
                    if probe.event in taken:
                        raise ProbeExistsError(
                            f"a probe named {probe.event} already exists in backend {other.name}",
                            "choose another with --name",
                        )
            infos = target.add(probes, enable=enable, event_filter=event_filter)
            self._reach_watches(target)
        return infos

    def _split(self, names: Sequence[str]) -> list[tuple[Backend, list[str]]]:
        """Which backend holds each name; an unknown name is an error before any change."""
        owner = {i.name: b for b in self.backends for i in b.list_probes()}
        check_probe_names(names, owner, f"group {self.group}")
        return [(b, [n for n in names if owner[n] is b]) for b in self.backends if any(owner[n] is b for n in names)]

    def remove(self, names: Sequence[str]) -> None:
        with self.tracefs.changing():
            for backend, own in self._split(names):
                backend.remove(own)

    def remove_all(self) -> list[str]:
        with self.tracefs.changing():
            return [name for backend in self.backends for name in backend.remove_all()]

    def enable(self, names: Sequence[str]) -> None:
        with self.tracefs.changing():
            for backend, own in self._split(names):
                backend.enable(own)
                self._reach_watches(backend)

    def _watch_instances(self) -> list[str]:
        """The instances of the watches running beside the first, and of killed ones."""
        return [f"instances/{p.name}" for p in self.tracefs.path("instances").glob(WATCH_INSTANCE_PREFIX + "*")]

    def _reach_watches(self, backend: Backend) -> None:
        """What backend just turned on reaches the watches that read instances of their own."""
        self._remove_stale_instances()
        for instance in self._watch_instances():
            try:
                backend.record_into(instance)
            except FileNotFoundError:
                pass  # that watch just ended and removed its instance

    def disable(self, names: Sequence[str]) -> None:
        with self.tracefs.changing():
            for backend, own in self._split(names):
                backend.disable(own)

    def list_probes(self) -> list[ProbeInfo]:
        return [info for backend in self.backends for info in backend.list_probes()]

    def stats(self) -> list[ProbeStats]:
        return [s for backend in self.backends for s in backend.stats()]

    def hit_pipe(self, clear: bool = True) -> Path:
        # Every backend's hits go to kpctl's one tracefs instance: each readies its own
        # events there, and they all name the same trace_pipe.
        pipes = {backend.hit_pipe(clear) for backend in self.backends}
        assert len(pipes) == 1, pipes
        return pipes.pop()

    @contextmanager
    def reading(self, clear: bool = False) -> Iterator[Path]:
        """The trace_pipe for one watch. trace_pipe hands each hit to one reader only, so
        the first watch (holding a flock on kpctl's instance) reads it, hits waiting there
        included, and a watch started beside it reads an instance of its own with the same
        events on, removed when it ends."""
        with self.tracefs.changing():  # no rm removes the idle instance meanwhile
            pipe = self.hit_pipe(clear=False)
            fd = os.open(pipe.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                with self._own_instance() as own:  # starts empty: nothing to clear
                    yield own
                return
            yield self.hit_pipe(clear) if clear else pipe
        finally:
            os.close(fd)

    @contextmanager
    def _own_instance(self) -> Iterator[Path]:
        from kpctl.watch import signals_ignored

        self._remove_stale_instances()
        instance = f"instances/{WATCH_INSTANCE_PREFIX}{os.getpid()}"
        self.tracefs.make_instance(instance)
        try:
            with self.tracefs.changing():
                for backend in self.backends:
                    backend.record_into(instance)
            yield self.tracefs.path(f"{instance}/trace_pipe")
        finally:
            with signals_ignored():
                self.tracefs.remove_instance(instance)

    def _remove_stale_instances(self) -> None:
        """Instances of watches that were killed (SIGKILL leaves them): one still being
        read is busy, and rmdir leaves it alone."""
        for instance in self._watch_instances():
            pid = instance.removeprefix(f"instances/{WATCH_INSTANCE_PREFIX}")
            if pid.isdigit() and not (self.tracefs.proc / pid).exists():
                self.tracefs.remove_instance(instance)
