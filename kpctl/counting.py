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
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Literal

from kpctl.backends.tracefs import TracefsBackend
from kpctl.errors import KpctlError, UsageError
from kpctl.histograms import BY_KEYS, TOTAL_KEY, HistEntry, parse_hist, removal, trigger
from kpctl.manager import short_lived
from kpctl.metrics import Metric
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


def events_of(functions: Sequence[str]) -> dict[str, str]:
    """function by its event's name; two functions may not share one."""
    events = {event_name(f): f for f in functions}
    if len(events) < len(functions):
        raise UsageError("a function is given twice, or two names differ only in their dots")
    return events


@dataclass(frozen=True)
class Command:
    """A line written to a tracefs file (appended), and the line that undoes it."""
    file: str
    line: str
    undo: str


class KernelTables:
    """Probes of a group and instance of this process's own, disabled, and the commands
    (triggers, synthetic events) that make them count: installed in order for a block,
    undone in reverse whatever ends it, then the probes and the instance go."""

    def __init__(self, tracefs: Tracefs, kind: str) -> None:
        self.tracefs = tracefs
        self.group = f"kpctl_{kind}_{os.getpid()}"
        self.instance = f"instances/{self.group}"
        self.backend = TracefsBackend(tracefs, group=self.group, instance=self.instance)

    def event_file(self, event: str, name: str, group: str | None = None) -> str:
        return f"{self.instance}/events/{group or self.group}/{event}/{name}"

    @contextmanager
    def kept(self, probes: Sequence[Probe], commands: Sequence[Command]) -> Iterator[None]:
        self.tracefs.make_instance(self.instance)
        try:
            with short_lived(self.backend, probes, enable=False):
                done: list[Command] = []
                try:
                    for command in commands:
                        try:
                            self.tracefs.append_command(command.file, command.line)
                        except OSError as e:
                            raise KpctlError(f"the kernel refused {command.line!r} in {command.file}: {e.strerror}",
                                             "counting needs hist triggers (CONFIG_HIST_TRIGGERS)") from None
                        done.append(command)
                    yield
                finally:
                    with signals_ignored():  # an event a trigger uses cannot be removed (EBUSY)
                        for command in reversed(done):
                            self.tracefs.append_command(command.file, command.undo)
        finally:
            with signals_ignored():
                self.tracefs.remove_instance(self.instance)

    def hist(self, event: str, group: str | None = None) -> tuple[list[HistEntry], int]:
        return parse_hist(self.tracefs.read(self.event_file(event, "hist", group)))


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
        self.tables = KernelTables(tracefs, "count")
        self.functions = events_of(functions)
        kind: Literal["p", "r"] = "r" if any(isinstance(a.fetch, ReturnValue) for a in args) else "p"
        self.probes = [
            Probe(kind, parse_target(f)[0], event=e, group=self.tables.group, args=args)
            for e, f in self.functions.items()
        ]

    def counting(self) -> AbstractContextManager[None]:
        """Counting for the block; nothing of it is left afterwards."""
        return self.tables.kept(self.probes, [
            Command(self.tables.event_file(e, "trigger"), self.trigger, removal(self.trigger)) for e in self.functions
        ])

    def counts(self) -> tuple[list[Count], int]:
        """The counts so far, biggest first, and how many hits full tables dropped."""
        counts: list[Count] = []
        dropped = 0
        for event, function in self.functions.items():
            entries, lost = self.tables.hist(event)
            dropped += lost
            if self.by is None:
                counts.append(Count(function, None, sum(e.count for e in entries)))
            else:
                counts.extend(Count(function, e.key, e.count) for e in entries)
        return sorted(counts, key=lambda c: (-c.hits, c.function, c.key or "")), dropped


class LatencyTimer:
    """Time from entry to return of each call of functions, in power-of-two buckets
    (bcc's funclatency), with the kernel's own tools: the entry probe's trigger keeps
    the time per thread in a hist variable, the return probe's computes the latency and
    fires a synthetic event of this process's own (onmatch), whose trigger buckets it.

    Per thread, the entry's time is one variable: a recursive call's inner entry
    replaces the outer's, and the outer call is then timed from the inner entry.
    """

    def __init__(self, tracefs: Tracefs, functions: Sequence[str], micros: bool = False) -> None:
        self.tables = KernelTables(tracefs, "lat")
        self.functions = events_of(functions)
        group = self.tables.group
        clock = "common_timestamp.usecs" if micros else "common_timestamp"
        self.probes: list[Probe] = []
        self.commands: list[Command] = []
        self.synthetic: dict[str, str] = {}  # synthetic event -> function
        for n, (event, function) in enumerate(self.functions.items()):
            target = parse_target(function)[0]
            self.probes += [Probe("p", target, event=event, group=group), Probe("r", target, event=f"{event}_ret", group=group)]
            synthetic = f"{group}_{n}"
            self.synthetic[synthetic] = function
            start = f"hist:keys=common_pid:ts0={clock}"
            end = (f"hist:keys=common_pid:lat={clock}-$ts0:onmatch({group}.{event}).{synthetic}($lat)")
            buckets = trigger("lat.log2")
            self.commands += [
                Command("synthetic_events", f"{synthetic} u64 lat", f"!{synthetic} u64 lat"),
                Command(self.tables.event_file(event, "trigger"), start, removal(start)),
                Command(self.tables.event_file(f"{event}_ret", "trigger"), end, removal(end)),
                Command(self.tables.event_file(synthetic, "trigger", "synthetic"), buckets, removal(buckets)),
            ]

    def counting(self) -> AbstractContextManager[None]:
        return self.tables.kept(self.probes, self.commands)

    def counts(self) -> tuple[list[Count], int]:
        """Calls per latency bucket (keys ``~ 2^k``), per function."""
        counts: list[Count] = []
        dropped = 0
        for synthetic, function in self.synthetic.items():
            entries, lost = self.tables.hist(synthetic, "synthetic")
            dropped += lost
            counts.extend(Count(function, e.key, e.count) for e in entries)
        return counts, dropped


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


def count_metric(counts: Sequence[Count], by: str | None) -> Metric:
    """Counts as a Prometheus gauge: hits counted while the command ran."""
    def labels(c: Count) -> dict[str, str]:
        return {"function": c.function, **({"by": by or "", "key": c.key} if c.key is not None else {}), "engine": ENGINE}

    return Metric("kpctl_count_hits", "gauge", "Hits of a function counted in the kernel while kpctl count ran.",
                  [(labels(c), c.hits) for c in counts])


def histogram_metric(buckets: Sequence[tuple[int, int, int]], target: str, fetcharg: str) -> Metric:
    """Power-of-two buckets as a Prometheus histogram: cumulative counts per upper bound
    (le), +Inf, and the count (the sum of the values is not known to hist triggers)."""
    labels = {"target": target, "fetcharg": fetcharg, "engine": ENGINE}
    samples: list[tuple[Mapping[str, str], float]] = []
    total = 0
    for _, high, hits in buckets:
        total += hits
        samples.append(({**labels, "le": str(high)}, total))
    samples += [({**labels, "le": "+Inf"}, total), (labels, total)]
    return Metric("kpctl_hist", "histogram", "Values of a fetch argument, in power-of-two buckets.", samples,
                  ["_bucket"] * (len(samples) - 1) + ["_count"])
