"""What a probe backend offers: the tracefs one (kpctl/tracefs.py) writes kprobe_events,
others (a kernel module over netlink) plug in behind the same interface. Hits of every
backend are read as trace_pipe text from a tracefs instance, so watch works for all."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from kpctl.errors import KpctlError, ProbeExistsError, check_probe_names
from kpctl.model import Probe


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


class Backends:
    """Several backends seen as one, for the commands that show and change probes of all
    of them (list, stats, rm, enable, disable, watch). A name belongs to one backend:
    add refuses a name another backend already has."""

    name = "all"

    def __init__(self, backends: Sequence[Backend]) -> None:
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
        return target.add(probes, enable=enable, event_filter=event_filter)

    def _split(self, names: Sequence[str]) -> list[tuple[Backend, list[str]]]:
        """Which backend holds each name; an unknown name is an error before any change."""
        owner = {i.name: b for b in self.backends for i in b.list_probes()}
        check_probe_names(names, owner, f"group {self.group}")
        return [(b, [n for n in names if owner[n] is b]) for b in self.backends if any(owner[n] is b for n in names)]

    def remove(self, names: Sequence[str]) -> None:
        for backend, own in self._split(names):
            backend.remove(own)

    def remove_all(self) -> list[str]:
        return [name for backend in self.backends for name in backend.remove_all()]

    def enable(self, names: Sequence[str]) -> None:
        for backend, own in self._split(names):
            backend.enable(own)

    def disable(self, names: Sequence[str]) -> None:
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
