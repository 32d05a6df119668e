"""What every backend offers: probes added, listed, switched and removed, their counts,
and where their hits arrive. A backend whose hits are trace events (tracefs, the module)
turns them on in a tracefs instance, and kpctl reads them all from its trace_pipe; one
whose hits reach kpctl otherwise (BPF's buffers) hands over sources of its own."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from kpctl.model import Probe

if TYPE_CHECKING:  # at run time only for the watches, not for every command's start-up
    from kpctl.hits import ProbeNamer
    from kpctl.watch import HitSource


@dataclass(frozen=True)
class ProbeInfo:
    """A probe as a backend knows it: its definition and its state."""
    probe: Probe
    enabled: bool
    filter: str | None
    backend: str
    # The kprobe's own state from debug/kprobes/list: FTRACE, OPTIMIZED, DISABLED, ...
    kprobe_flags: tuple[str, ...] = ()
    # Where the probe sits, when the backend knows it (the module reports it).
    address: int | None = None

    @property
    def name(self) -> str:
        return self.probe.event or ""


@dataclass(frozen=True)
class ProbeStats:
    name: str
    hits: int
    misses: int  # hits the kernel could not record (kretprobe maxactive too small, reentrancy)
    backend: str


class ProbeBackend(Protocol):
    """Probes of one group, managed by one mechanism. Every method that changes state is
    all-or-nothing: on an error nothing of that call stays behind."""

    name: str
    group: str
    hits_in_tracefs: bool  # its hits are trace events, read from a tracefs instance

    def add(self, probes: Sequence[Probe], *, enable: bool = True, event_filter: str | None = None) -> list[ProbeInfo]: ...

    def requests(self, probes: Sequence[Probe], *, enable: bool = True, event_filter: str | None = None) -> list[str]:
        """What add() would ask of the kernel, one line per request, asking nothing
        (add --dry-run)."""
        ...

    def remove(self, names: Sequence[str]) -> None: ...

    def remove_all(self) -> list[str]: ...

    def enable(self, names: Sequence[str]) -> None: ...

    def disable(self, names: Sequence[str]) -> None: ...

    def list_probes(self) -> list[ProbeInfo]: ...

    def stats(self) -> list[ProbeStats]: ...

    def record_into(self, instance: str) -> None:
        """Turn on, in a tracefs instance (instances/NAME), the trace events that carry
        the hits of this backend's enabled probes; nothing when its hits are no trace
        events."""
        ...

    def probe_namers(self) -> Mapping[str, ProbeNamer]:
        """For trace events that several of its probes share, how a hit names its probe."""
        ...

    def hit_sources(self) -> list[HitSource]:
        """Where hits arrive that are no trace events (opened for one watch)."""
        ...
