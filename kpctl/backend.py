"""What a probe backend offers: the tracefs one (kpctl/tracefs.py) writes kprobe_events,
others (a kernel module over netlink) plug in behind the same interface. Hits of every
backend are read as trace_pipe text from a tracefs instance, so watch works for all."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

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

    def hit_pipe(self) -> Path:
        """The trace_pipe where this backend's hits arrive, emptied of older hits."""
        ...
