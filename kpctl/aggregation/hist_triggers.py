"""The tracefs engine of `kpctl count`, `hist`, `latency` and `stacks`: hits counted in
the kernel by hist triggers (bcc's funccount, argdist -H, stackcount): no BPF, no
compiler.

Each function gets a kprobe event in a group and a tracefs instance of this process's
own, defined disabled; a hist trigger on the event in that instance turns it on in soft
mode (trace_events.c, __ftrace_event_enable_disable() with soft_disable): the trigger
sees every hit, nothing is written to a trace buffer. Triggers, probes and instance go
when counting ends, however it ends: they are the process's session (gc.owned_session()).
"""
from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Literal

from kpctl.aggregation.counts import Count, biggest_first, histogram_split, split_by
from kpctl.backends.tracefs import TracefsBackend
from kpctl.errors import KpctlError, UsageError
from kpctl.gc import owned_session
from kpctl.histograms import BY_KEYS, TOTAL_KEY, HistEntry, parse_hist, trigger
from kpctl.model import FetchArg, Probe, ReturnValue, parse_fetch_arg, parse_target
from kpctl.sessions import Session
from kpctl.tracefs import Tracefs

ENGINE = "tracefs"
_NOT_IN_NAME = re.compile(r"[^A-Za-z0-9_]")


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
    """A line written to a tracefs file (appended)."""
    file: str
    line: str


class KernelTables:
    """Probes of a group and instance of this process's own, disabled, and the commands
    (triggers, synthetic events) that make them count: installed in order for a block,
    all of the session removed whatever ends it."""

    def __init__(self, tracefs: Tracefs, kind: str) -> None:
        self.tracefs = tracefs
        self.session = Session.mine(kind)
        self.group = self.session.group
        self.instance = self.session.instance
        self.backend = TracefsBackend(tracefs, group=self.group, instance=self.instance)

    def event_file(self, event: str, name: str, group: str | None = None) -> str:
        return f"{self.instance}/events/{group or self.group}/{event}/{name}"

    @contextmanager
    def kept(self, probes: Sequence[Probe], commands: Sequence[Command]) -> Iterator[None]:
        with owned_session(self.tracefs, self.session.purpose):
            self.tracefs.make_instance(self.instance)
            self.backend.add(probes, enable=False)
            for command in commands:
                try:
                    self.tracefs.append_command(command.file, command.line)
                except OSError as e:
                    raise KpctlError(f"the kernel refused {command.line!r} in {command.file}: {e.strerror}",
                                     "counting needs hist triggers (CONFIG_HIST_TRIGGERS)") from None
            yield

    def hist(self, event: str, group: str | None = None) -> tuple[list[HistEntry], int]:
        return parse_hist(self.tracefs.read(self.event_file(event, "hist", group)))


class HitCounter:
    """Counts the hits of functions, split by one key (BY_KEYS, or a named fetch
    argument NAME=FETCH[:TYPE]) or not split. With log2, an argument's values go into
    power-of-two buckets (a histogram); an argument of $retval makes return probes."""

    engine = ENGINE

    def __init__(self, tracefs: Tracefs, functions: Sequence[str], by: str | None = None, log2: bool = False) -> None:
        self.tracefs = tracefs
        self.by = by
        split = histogram_split(by or "") if log2 else split_by(by)
        args: tuple[FetchArg, ...] = ()
        if split is None:
            key = TOTAL_KEY
        elif isinstance(split, str):
            key, fetch = BY_KEYS[split]
            args = (parse_fetch_arg(fetch),) if fetch else ()
        else:
            key, args = split.name or "", (split,)
        if log2:
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
        return self.tables.kept(self.probes, [
            Command(self.tables.event_file(e, "trigger"), self.trigger) for e in self.functions
        ])

    def counts(self) -> tuple[list[Count], int]:
        counts: list[Count] = []
        dropped = 0
        for event, function in self.functions.items():
            entries, lost = self.tables.hist(event)
            dropped += lost
            if self.by is None:
                counts.append(Count(function, None, sum(e.count for e in entries)))
            elif self.by == "stack":
                counts.extend(Count(function, from_function(e.key, function), e.count) for e in entries)
            else:
                counts.extend(Count(function, e.key, e.count) for e in entries)
        return biggest_first(counts), dropped


def from_function(stack: str, function: str) -> str:
    """A kprobe event's stack, leaf first, from the probed function on: the kernel
    records it inside the kprobe's own handler (on x86 an ftrace-based kprobe adds
    kprobe_ftrace_handler and its trampoline above the function)."""
    frames = stack.split(";")
    at = next((i for i, frame in enumerate(frames) if frame.split("+", 1)[0] == function), 0)
    return ";".join(frames[at:])


class LatencyTimer:
    """Time from entry to return of each call of functions, in power-of-two buckets
    (bcc's funclatency), with the kernel's own tools: the entry probe's trigger keeps
    the time per thread in a hist variable, the return probe's computes the latency and
    fires a synthetic event of this process's own (onmatch), whose trigger buckets it.

    Per thread, the entry's time is one variable, and a hist variable is read once: a
    recursive call's inner entry replaces the outer's, the innermost return reads it,
    and the outer returns find none, so of a recursion only the innermost call is timed.
    """
    engine = ENGINE

    def __init__(self, tracefs: Tracefs, functions: Sequence[str], unit: str = "nsecs", by: str | None = None) -> None:
        if by is not None:
            raise UsageError("latency --by needs the bpf engine", "--engine bpf (hist triggers key one field)")
        if unit not in ("nsecs", "usecs"):
            raise UsageError(f"hist triggers time in nsecs or usecs, not {unit}", "--engine bpf, or -u")
        self.tables = KernelTables(tracefs, "lat")
        self.functions = events_of(functions)
        group = self.tables.group
        clock = "common_timestamp.usecs" if unit == "usecs" else "common_timestamp"
        self.probes: list[Probe] = []
        self.commands: list[Command] = []
        self.synthetic: dict[str, str] = {}  # synthetic event -> function
        for n, (event, function) in enumerate(self.functions.items()):
            target = parse_target(function)[0]
            self.probes += [Probe("p", target, event=event, group=group), Probe("r", target, event=f"{event}_ret", group=group)]
            synthetic = self.tables.session.member(n)
            self.synthetic[synthetic] = function
            start = f"hist:keys=common_pid:ts0={clock}"
            end = (f"hist:keys=common_pid:lat={clock}-$ts0:onmatch({group}.{event}).{synthetic}($lat)")
            buckets = trigger("lat.log2")
            self.commands += [
                Command("synthetic_events", f"{synthetic} u64 lat"),
                Command(self.tables.event_file(event, "trigger"), start),
                Command(self.tables.event_file(f"{event}_ret", "trigger"), end),
                Command(self.tables.event_file(synthetic, "trigger", "synthetic"), buckets),
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
