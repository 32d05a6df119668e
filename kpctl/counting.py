"""`kpctl count`: hits per function counted in the kernel (bcc's funccount), through
tracefs hist triggers: no BPF, no compiler.

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

from kpctl.backends.tracefs import TracefsBackend
from kpctl.errors import KpctlError, UsageError
from kpctl.histograms import BY_KEYS, TOTAL_KEY, parse_hist, removal, trigger
from kpctl.manager import short_lived
from kpctl.model import FetchArg, Probe, parse_fetch_arg, parse_target
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
    argument NAME=FETCH[:TYPE]) or not split."""

    def __init__(self, tracefs: Tracefs, functions: Sequence[str], by: str | None = None) -> None:
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
        self.trigger = trigger(key)
        self.group = f"kpctl_count_{os.getpid()}"
        self.instance = f"instances/{self.group}"
        self.functions = {event_name(f): f for f in functions}
        if len(self.functions) < len(functions):
            raise UsageError("a function is given twice, or two names differ only in their dots")
        self.probes = [
            Probe("p", parse_target(f)[0], event=e, group=self.group, args=args) for e, f in self.functions.items()
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
