"""`kpctl count`, `hist` and `stacks`: hits counted in the kernel (bcc's funccount,
argdist -H, stackcount), through tracefs hist triggers: no BPF, no compiler.

Each function gets a kprobe event in a group and a tracefs instance of this process's
own, defined disabled; a hist trigger on the event in that instance turns it on in soft
mode (trace_events.c, __ftrace_event_enable_disable() with soft_disable): the trigger
sees every hit, nothing is written to a trace buffer. Triggers, probes and instance go
when counting ends, however it ends.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from kpctl.backends.tracefs import TracefsBackend
from kpctl.errors import KpctlError, UsageError
from kpctl.histograms import BY_KEYS, TOTAL_KEY, parse_hist, removal, trigger
from kpctl.manager import short_lived
from kpctl.model import FetchArg, Probe, ReturnValue, parse_fetch_arg, parse_target
from kpctl.signals import signals_ignored
from kpctl.tracefs import Tracefs

ENGINE = "tracefs"  # hist triggers on kprobe events
_NOT_IN_NAME = re.compile(r"[^A-Za-z0-9_]")


@dataclass(frozen=True)
class Count:
    function: str
    key: str | None  # what --by split the hits by; None: all of the function's hits
    hits: int


def event_name(function: str) -> str:
    """An event name for a function: compiler clones (foo.isra.0) have dots."""
    return _NOT_IN_NAME.sub("_", function)


class HitCounter:
    """Counts the hits of functions, split by one key (BY_KEYS, or a named fetch
    argument NAME=FETCH[:TYPE]) or not split. With log2, an argument's values go into
    power-of-two buckets (a histogram); an argument of $retval makes return probes."""

    def __init__(self, tracefs: Tracefs, functions: Sequence[str], by: str | None = None, log2: bool = False) -> None:
        self.tracefs = tracefs
        self.by = by
        args: tuple[FetchArg, ...] = ()
        if by is None:
            key = TOTAL_KEY
        elif by in BY_KEYS:
            key, fetch = BY_KEYS[by]
            args = (parse_fetch_arg(fetch),) if fetch else ()
        else:
            arg = parse_fetch_arg(by)
            if arg.name is None:
                raise UsageError(f"--by {by}: a fetch argument to count by needs a name", "for example: --by 'size=$arg3:u64'")
            key, args = arg.name, (arg,)
        if log2:
            if not args or by in BY_KEYS:
                raise UsageError(f"a histogram needs a numeric fetch argument, not {by}", "for example: 'size=$arg3:u64'")
            key += ".log2"
        self.trigger = trigger(key)
        self.group = f"kpctl_count_{os.getpid()}"
        self.instance = f"instances/{self.group}"
        self.functions = {event_name(f): f for f in functions}
        if len(self.functions) < len(functions):
            raise UsageError("a function is given twice, or two names differ only in their dots")
        kind: Literal["p", "r"] = "r" if any(isinstance(a.fetch, ReturnValue) for a in args) else "p"
        self.probes = [
            Probe(kind, parse_target(f)[0], event=e, group=self.group, args=args) for e, f in self.functions.items()
        ]
        self.backend = TracefsBackend(tracefs, group=self.group, instance=self.instance)

    def _file(self, event: str, name: str) -> str:
        return f"{self.instance}/events/{self.group}/{event}/{name}"

    @contextmanager
    def counting(self) -> Iterator[None]:
        """Counting for the block; nothing of it is left afterwards."""
        self.tracefs.make_instance(self.instance)
        try:
            with short_lived(self.backend, self.probes, enable=False):
                armed: list[str] = []
                try:
                    for event in self.functions:
                        try:
                            self.tracefs.append_command(self._file(event, "trigger"), self.trigger)
                        except OSError as e:
                            raise KpctlError(f"the kernel refused a hist trigger on {self.functions[event]}: "
                                             f"{e.strerror}", "kpctl count needs CONFIG_HIST_TRIGGERS") from None
                        armed.append(event)
                    yield
                finally:
                    with signals_ignored():  # an event with a trigger cannot be removed (EBUSY)
                        for event in armed:
                            self.tracefs.append_command(self._file(event, "trigger"), removal(self.trigger))
        finally:
            with signals_ignored():
                self.tracefs.remove_instance(self.instance)

    def counts(self) -> tuple[list[Count], int]:
        """The counts so far, biggest first, and how many hits full tables dropped."""
        counts: list[Count] = []
        dropped = 0
        for event, function in self.functions.items():
            entries, lost = parse_hist(self.tracefs.read(self._file(event, "hist")))
            dropped += lost
            if self.by is None:
                counts.append(Count(function, None, sum(e.count for e in entries)))
            else:
                counts.extend(Count(function, e.key, e.count) for e in entries)
        return sorted(counts, key=lambda c: (-c.hits, c.function, c.key or "")), dropped


def since(now: Sequence[Count], before: Sequence[Count]) -> list[Count]:
    """The hits of now that came after before (for -i intervals), biggest first."""
    earlier = {(c.function, c.key): c.hits for c in before}
    delta = [Count(c.function, c.key, c.hits - earlier.get((c.function, c.key), 0)) for c in now]
    return sorted((c for c in delta if c.hits or c.key is None), key=lambda c: (-c.hits, c.function, c.key or ""))


def log2_buckets(counts: Sequence[Count]) -> list[tuple[int, int, int]]:
    """(low, high, hits) per power-of-two bucket from the first to the last with hits,
    empty ones included. The kernel keys a value v by ilog2(roundup_pow_of_two(v)),
    printed ``~ 2^k``: bucket k holds 2^(k-1)+1 .. 2^k (k = 0: 0 and 1)."""
    hits: dict[int, int] = {}
    for c in counts:
        m = re.fullmatch(r"~ 2\^(\d+)", c.key or "")
        if m:
            hits[int(m.group(1))] = hits.get(int(m.group(1)), 0) + c.hits
    if not hits:
        return []
    return [((1 << (k - 1)) + 1 if k else 0, 1 << k, hits.get(k, 0)) for k in range(min(hits), max(hits) + 1)]


def folded(counts: Sequence[Count]) -> list[str]:
    """Stacks as flame-graph input (Brendan Gregg's stackcollapse): root first, frames
    joined by ';', then the count. The kernel prints a stack leaf first."""
    return [f"{';'.join(reversed((c.key or '').split(';')))} {c.hits}" for c in counts]


def render_log2(buckets: Sequence[tuple[int, int, int]], label: str, width: int = 40) -> list[str]:
    """Buckets as bcc's tools print them: range, hits, and a bar scaled to the biggest."""
    most = max((hits for _, _, hits in buckets), default=0)
    span = max(len(str(high)) for _, high, _ in buckets) if buckets else 1
    lines = [f"{label:>{2 * span + 4}} : {'hits':<8} distribution"]
    for low, high, hits in buckets:
        bar = "*" * (round(width * hits / most) if most else 0)
        lines.append(f"{low:>{span}} -> {high:<{span}} : {hits:<8} |{bar:<{width}}|")
    return lines
