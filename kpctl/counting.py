"""The counting commands' engines: a registry like the backends' (kpctl.registry). Each
declares its name, a line for --help and doctor, whether it works here (and why not),
whether it compiles before counting, and makes the counters and timers of count, hist,
latency and stacks. A command that names none gets the first of ENGINE_TYPES that works.
A new engine is a module in kpctl/aggregation/ and an entry here.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple

from kpctl.errors import KpctlError
from kpctl.registry import Availability, backend_type

if TYPE_CHECKING:  # the CLI imports this module at start-up: nothing heavier
    from kpctl.aggregation.counts import Aggregation
    from kpctl.tracefs import Tracefs


class EngineType(NamedTuple):  # a NamedTuple: imported at start-up (see kpctl.registry)
    name: str
    summary: str
    compiles: bool  # builds its program with a compiler first: seconds under emulation
    availability: Callable[[Tracefs], Availability]
    hit_counter: Callable[[Tracefs, Sequence[str], str | None, bool], Aggregation]  # (tracefs, functions, by, log2)
    latency_timer: Callable[[Tracefs, Sequence[str], str, str | None], Aggregation]  # (tracefs, functions, unit, by)


def _bpf_availability(tracefs: Tracefs) -> Availability:
    from kpctl.aggregation.bpf import availability

    return availability()


def _bpf_counter(tracefs: Tracefs, functions: Sequence[str], by: str | None, log2: bool) -> Aggregation:
    from kpctl.aggregation.bpf import BpfHitCounter

    return BpfHitCounter(tracefs, functions, by, log2)


def _bpf_timer(tracefs: Tracefs, functions: Sequence[str], unit: str, by: str | None) -> Aggregation:
    from kpctl.aggregation.bpf import BpfLatencyTimer

    return BpfLatencyTimer(tracefs, functions, unit, by)


def _bcc_availability(tracefs: Tracefs) -> Availability:
    return backend_type("bpf").availability(tracefs)  # the bpf backend is bcc's too


def _bcc_counter(tracefs: Tracefs, functions: Sequence[str], by: str | None, log2: bool) -> Aggregation:
    from kpctl.aggregation.bcc import BccHitCounter

    return BccHitCounter(functions, by, log2)


def _bcc_timer(tracefs: Tracefs, functions: Sequence[str], unit: str, by: str | None) -> Aggregation:
    from kpctl.aggregation.bcc import BccLatencyTimer

    return BccLatencyTimer(functions, unit, by)


def _hist_availability(tracefs: Tracefs) -> Availability:
    if not tracefs.path("kprobe_events").exists():
        return Availability(False, "this kernel has no kprobe_events", "the kernel needs CONFIG_KPROBE_EVENTS=y")
    if "hist:" not in tracefs.readme:
        return Availability(False, "tracefs has no hist triggers", "the kernel needs CONFIG_HIST_TRIGGERS=y")
    return Availability(True, "hist triggers on kprobe events")


def _hist_counter(tracefs: Tracefs, functions: Sequence[str], by: str | None, log2: bool) -> Aggregation:
    from kpctl.aggregation.hist_triggers import HitCounter

    return HitCounter(tracefs, functions, by, log2)


def _hist_timer(tracefs: Tracefs, functions: Sequence[str], unit: str, by: str | None) -> Aggregation:
    from kpctl.aggregation.hist_triggers import LatencyTimer

    return LatencyTimer(tracefs, functions, unit, by)


ENGINE_TYPES = (
    EngineType("bpf", "kpctl's own BPF programs and maps, no compiler", False, _bpf_availability, _bpf_counter,
               _bpf_timer),
    EngineType("bcc", "BPF maps through bcc, compiled at start", True, _bcc_availability, _bcc_counter, _bcc_timer),
    EngineType("tracefs", "tracefs hist triggers", False, _hist_availability, _hist_counter, _hist_timer),
)
ENGINES = {e.name: e for e in ENGINE_TYPES}


def choose_engine(tracefs: Tracefs, engine: str | None) -> EngineType:
    """engine if it works here (KpctlError if not), else the first of ENGINE_TYPES that does."""
    for kind in [ENGINES[engine]] if engine else ENGINE_TYPES:
        available = kind.availability(tracefs)
        if available.usable:
            return kind
        if engine:
            raise KpctlError(f"engine {engine} does not work here: {available.detail}", available.fix or None)
    reasons = "; ".join(f"{kind.name}: {kind.availability(tracefs).detail}" for kind in ENGINE_TYPES)
    raise KpctlError(f"no counting engine works here ({reasons})", "see: kpctl doctor")
