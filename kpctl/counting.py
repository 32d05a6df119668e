"""The counting commands' engines: which work here, which one a command gets when it
names none (BPF where bcc works, tracefs hist triggers otherwise), and the counters
and timers of each."""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from kpctl.errors import KpctlError
from kpctl.registry import Availability, backend_type

if TYPE_CHECKING:  # the CLI imports ENGINES at start-up: nothing heavier
    from kpctl.aggregation.counts import Aggregation
    from kpctl.tracefs import Tracefs

ENGINES = {
    "bpf": "BPF maps through bcc",
    "tracefs": "tracefs hist triggers",
}


def engine_availability(tracefs: Tracefs, engine: str) -> Availability:
    if engine == "bpf":
        return backend_type("bpf").availability(tracefs)
    if not tracefs.path("kprobe_events").exists():
        return Availability(False, "this kernel has no kprobe_events", "the kernel needs CONFIG_KPROBE_EVENTS=y")
    if "hist:" not in tracefs.readme:
        return Availability(False, "tracefs has no hist triggers", "the kernel needs CONFIG_HIST_TRIGGERS=y")
    return Availability(True, "hist triggers on kprobe events")


def choose_engine(tracefs: Tracefs, engine: str | None) -> str:
    """engine if it works here (KpctlError if not), else the first of ENGINES that does."""
    for name in [engine] if engine else ENGINES:
        available = engine_availability(tracefs, name)
        if available.usable:
            return name
        if engine:
            raise KpctlError(f"engine {engine} does not work here: {available.detail}", available.fix or None)
    reasons = "; ".join(f"{name}: {engine_availability(tracefs, name).detail}" for name in ENGINES)
    raise KpctlError(f"no counting engine works here ({reasons})", "see: kpctl doctor")


def hit_counter(engine: str, tracefs: Tracefs, functions: Sequence[str], by: str | None = None,
                log2: bool = False) -> Aggregation:
    if engine == "bpf":
        from kpctl.aggregation.bpf import BpfHitCounter

        return BpfHitCounter(functions, by, log2)
    from kpctl.aggregation.hist_triggers import HitCounter

    return HitCounter(tracefs, functions, by, log2)


def latency_timer(engine: str, tracefs: Tracefs, functions: Sequence[str], unit: str = "nsecs",
                  by: str | None = None) -> Aggregation:
    if engine == "bpf":
        from kpctl.aggregation.bpf import BpfLatencyTimer

        return BpfLatencyTimer(functions, unit, by)
    from kpctl.aggregation.hist_triggers import LatencyTimer

    return LatencyTimer(tracefs, functions, unit, by)
