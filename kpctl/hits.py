"""Probe hits as the kernel prints them in trace_pipe: parsing, filtering and output.

print_kprobe_event() and print_kretprobe_event() (kernel/trace/trace_kprobe.c) write::

    cat-154 [000] ..... 6.381431: regs: (vfs_read+0x0/0x310) arg1=0xff36... cnt=832
    cat-154 [000] ..... 6.381650: retsfx: (ksys_read+0x6b/0xf0 <- vfs_read) ret=0x340
    CPU:0 [LOST 29050 EVENTS]

The event name comes without its group. When several kretprobes sit on one function the
caller prints as ``[unknown/kretprobe'd]`` (seen on 6.1). Strings are printed raw between
double quotes, unescaped, so splitting ``a=v b=v`` on spaces is wrong for a string with
spaces: with the probe's argument names known (an ArgSchema) each value runs up to the next
`` NAME=``.

This is watch's hot path. A whole chunk of text goes through one compiled regex with
finditer (no per-line split or strip); a Hit keeps only its match object and parses its
arguments when asked; lines the regex skips are counted from the newline count rather than
looked at one by one.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Container, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Union

from kpctl.model import ArgType, Probe

_HIT_LINE = re.compile(
    r"^ *(.*?)-(\d+) +(?:\( *[\d-]+\) +)?\[(\d+)\] +(?:\S+ +)?([\d.]+): (\w+): "
    r"\((\[unknown/kretprobe'd\]|[^ )/]*)(?:/0x[0-9a-f]+)?(?: \[([\w-]+)\])?(?: <- ([^)]*))?\)(.*)$",
    re.M,
)
_COMM, _TID, _CPU, _TIME, _EVENT, _SITE, _MODULE, _FUNCTION, _ARGS = range(1, 10)
_LOST_LINE = re.compile(r"^CPU:(\d+) \[LOST (\d+) EVENTS\]$", re.M)
_ANY_ARG = re.compile(r" ([A-Za-z_][A-Za-z0-9_]*)=")
_INT = re.compile(r"-?\d+\Z")

# How a backend whose probes share trace events names the probe of a hit: from the
# event's argument text, (probe name, the arguments left), or None when it cannot.
ProbeNamer = Callable[[str], "tuple[str, str] | None"]


def probe_name(event: str, args: str, namers: Mapping[str, ProbeNamer]) -> tuple[str, str]:
    """(probe name, remaining argument text) of a hit line's event and arguments."""
    namer = namers.get(event)
    named = namer(args) if namer is not None else None
    return named if named is not None else (event, args)


Value = Union[int, str, None, list["Value"]]


@dataclass(frozen=True)
class ArgSchema:
    """The names and types of one event's arguments, in the order the kernel prints them."""
    names: tuple[str, ...]
    types: tuple[ArgType | None, ...]

    @classmethod
    def of(cls, probe: Probe) -> ArgSchema:
        # The kernel names unnamed arguments arg1, arg2, ... by position (traceprobe_parse_probe_arg()).
        names = tuple(a.name or f"arg{i}" for i, a in enumerate(probe.args, 1))
        return cls(names, tuple(a.type for a in probe.args))

    def splitter(self) -> re.Pattern[str]:
        """A regex with one group per argument value. A string value is taken greedily up
        to its last closing quote, so a string that itself contains `` NAME=`` stays whole."""
        if not self.names:
            return re.compile(r"\Z")
        groups = [
            r'(".*"|\(fault\))' if t is not None and t.is_string and t.array is None else "(.*?)"
            for t in self.types
        ]
        groups[-1] = groups[-1].replace("(.*?)", "(.*)")
        return re.compile("".join(f" {re.escape(n)}={g}" for n, g in zip(self.names, groups, strict=True)) + r"\Z", re.S)


def parse_value(text: str, arg_type: ArgType | None = None) -> Value:
    """One printed value, typed: numbers (``-100``, ``0x3``) as int, strings unquoted
    (None for ``(fault)``), symbols and chars as str, arrays ``{1,2}`` as lists."""
    if arg_type is not None and arg_type.array is not None and text.startswith("{"):
        element = ArgType(arg_type.base, arg_type.bitfield)
        inner = text[1:-1]
        parts = inner[1:-1].split('","') if element.is_string and inner.startswith('"') else inner.split(",")
        return [parse_value(f'"{p}"' if element.is_string and inner.startswith('"') else p, element) for p in parts]
    if arg_type is not None:
        if arg_type.base == "symbol":
            return text
        if arg_type.base == "char" and len(text) >= 2 and text[0] == text[-1] == "'":
            return text[1:-1]
    if text.startswith('"') and text.endswith('"') and len(text) >= 2:
        return text[1:-1]
    if text == "(fault)":
        return None
    if text.startswith("0x"):
        try:
            return int(text, 16)
        except ValueError:
            return text
    if _INT.match(text):
        return int(text)
    if text.startswith("{") and text.endswith("}"):
        return [parse_value(p) for p in text[1:-1].split(",")]
    return text


def _where(site: str, module: str | None, function: str | None) -> str:
    if module:
        site = f"{site} [{module}]"
    return f"{site} <- {function}" if function else site


class Hit:
    """One hit of a probe. Fields are read from the matched line on access."""
    __slots__ = ("_match", "_schema", "_namers")

    def __init__(self, match: re.Match[str], schema: _CompiledSchema | None, namers: Mapping[str, ProbeNamer]) -> None:
        self._match = match
        self._schema = schema
        self._namers = namers

    @property
    def comm(self) -> str:
        return self._match.group(_COMM)

    @property
    def tid(self) -> int:
        """The thread's id: what trace_pipe prints after the task's name."""
        return int(self._match.group(_TID))

    @property
    def cpu(self) -> int:
        return int(self._match.group(_CPU))

    @property
    def timestamp(self) -> str:
        return self._match.group(_TIME)

    @property
    def event(self) -> str:
        """The probe's name: the trace event's, or the one a backend's namer reads."""
        event, args = self._match.group(_EVENT, _ARGS)
        return probe_name(event, args, self._namers)[0]

    @property
    def is_return(self) -> bool:
        return self._match.group(_FUNCTION) is not None

    @property
    def function(self) -> str | None:
        """The probed function of a return probe's hit."""
        return self._match.group(_FUNCTION)

    @property
    def where(self) -> str:
        """``sym+off`` (``[module]`` appended) for an entry hit, ``caller+off <- func``
        for a return hit; the kernel's ``/size`` is left out."""
        return _where(*self._match.group(_SITE, _MODULE, _FUNCTION))

    @property
    def args(self) -> dict[str, Value]:
        event, args = self._match.group(_EVENT, _ARGS)
        return parse_args(probe_name(event, args, self._namers)[1], self._schema)

    def to_json(self, backend: str = "") -> dict[str, object]:
        return {
            "time": float(self.timestamp), "cpu": self.cpu, "tid": self.tid, "comm": self.comm,
            "probe": self.event, "backend": backend, "where": self.where, "args": self.args,
        }


class _CompiledSchema:
    __slots__ = ("schema", "pattern")

    def __init__(self, schema: ArgSchema) -> None:
        self.schema = schema
        self.pattern = schema.splitter()


def parse_args(text: str, schema: _CompiledSchema | None) -> dict[str, Value]:
    """The ``name=value`` pairs after the location, typed.

    text starts with the space before the first name. Without a schema (an event kpctl
    did not define) values are split at each `` NAME=``, which is right unless a string
    itself contains one.
    """
    if schema is not None:
        match = schema.pattern.match(text)
        if match is not None:
            s = schema.schema
            return {n: parse_value(v, t) for n, v, t in zip(s.names, match.groups(), s.types, strict=True)}
    parts = _ANY_ARG.split(text)
    return {parts[i]: parse_value(parts[i + 1]) for i in range(1, len(parts) - 1, 2)}


@dataclass
class HitCounts:
    hits: int = 0
    lost: int = 0  # events the kernel dropped because the buffer was full
    unparsed: int = 0  # lines that are neither a hit nor a LOST notice
    first_unparsed: str | None = None  # shown in the summary: what the kernel wrote


class HitParser:
    """Turns trace_pipe text into Hits, with the schemas of the events it knows and the
    namers of events that several probes share."""

    def __init__(self, probes: Sequence[Probe] = (), namers: Mapping[str, ProbeNamer] | None = None) -> None:
        self.namers: Mapping[str, ProbeNamer] = namers or {}
        self._schemas: dict[str, _CompiledSchema] = {}
        for probe in probes:
            if probe.event:
                self._schemas[probe.event] = _CompiledSchema(ArgSchema.of(probe))

    def hits(self, text: str) -> Iterator[Hit]:
        """Every hit in text (whole lines). LOST notices and other lines are skipped:
        see lost_events() and the counts HitStream keeps."""
        return map(self.hit, hit_matches(text))

    def hit(self, match: re.Match[str]) -> Hit:
        return Hit(match, self._schemas.get(match.group(_EVENT)), self.namers)  # shared events have none


def hit_matches(text: str) -> Iterator[re.Match[str]]:
    """The fast path under HitParser.hits(): one match per hit line, nothing else built."""
    return _HIT_LINE.finditer(text)


_to_json_line = json.JSONEncoder(separators=(",", ":")).encode


def lost_events(text: str) -> list[tuple[int, int]]:
    """(cpu, number of events lost) for each LOST notice in text."""
    if "LOST" not in text:  # a substring test keeps this off the common path
        return []
    return [(int(c), int(n)) for c, n in _LOST_LINE.findall(text)]


def _first_unparsed(text: str) -> str | None:
    for line in text.splitlines():
        if not (_HIT_LINE.match(line) or _LOST_LINE.match(line)):
            return line
    return None


class HitStream:
    """Parses, filters and prints hits: exactly what `kpctl watch` does with each chunk
    of trace_pipe text (whole lines). Text output prints the kernel's value text as it
    is; --json output types every value."""

    HEADER = f"{'TIME':>14} {'CPU':>3} {'TID':>7} {'COMM':<16} {'PROBE':<20} WHERE / ARGS\n"

    def __init__(
        self,
        out: IO[str],
        probes: Sequence[Probe] = (),
        *,
        as_json: bool = False,
        events: Sequence[str] = (),
        threads: Container[str] | None = None,
        own_pid: int | None = None,
        comm: str | None = None,
        count: int | None = None,
        backend_of: Mapping[str, str] | None = None,
        namers: Mapping[str, ProbeNamer] | None = None,
    ) -> None:
        self._out = out
        self._parser = HitParser(probes, namers)
        self._as_json = as_json
        self._events = frozenset(events) or None
        self._threads = threads  # thread ids as trace_pipe prints them
        # The watcher's own hits (opening trace_pipe is one on the file-open path) are
        # never what the user is watching for.
        self._own_pid = str(own_pid) if own_pid is not None else None
        self._comm = comm
        self._remaining = count
        self._backend_of = backend_of or {}
        self.counts = HitCounts()

    @property
    def done(self) -> bool:
        return self._remaining is not None and self._remaining <= 0

    def only_threads(self, threads: Container[str]) -> None:
        """From now on, only hits of these thread ids (as trace_pipe prints them)."""
        self._threads = threads

    def feed(self, text: str) -> None:
        """Handle whole lines of trace_pipe text."""
        lines: list[str] = []
        append = lines.append
        events, threads, comm, own_pid = self._events, self._threads, self._comm, self._own_pid
        backend_of, counts, namers = self._backend_of, self.counts, self._parser.namers
        matched = 0
        # A Hit object is built only for --json; text output formats the match directly.
        for m in hit_matches(text):
            matched += 1
            event, args = m.group(_EVENT, _ARGS)
            if event in namers:
                event, args = probe_name(event, args, namers)
            if events is not None and event not in events:
                continue
            if own_pid is not None and m.group(_TID) == own_pid:
                continue
            if threads is not None and m.group(_TID) not in threads:
                continue
            if comm is not None and m.group(_COMM) != comm:
                continue
            if self._remaining is not None:
                if self._remaining <= 0:
                    break
                self._remaining -= 1
            counts.hits += 1
            if self._as_json:
                hit = self._parser.hit(m)
                append(_to_json_line(hit.to_json(backend_of.get(event, ""))))
            else:
                c, p, cpu, ts, _, site, module, function, _ = m.groups()
                append(f"{ts:>14} {cpu:>3} {p:>7} {c:<16} {event:<20} {_where(site, module, function)}{args}")
        else:  # all of text was seen (no --count cut it short): account for every line
            lost = lost_events(text)
            for cpu_no, n in lost:
                counts.lost += n
                append(_to_json_line({"lost": n, "cpu": cpu_no}) if self._as_json else f"LOST {n} events on CPU {cpu_no}")
            unparsed = text.count("\n") - matched - len(lost)
            if unparsed and counts.first_unparsed is None:
                counts.first_unparsed = _first_unparsed(text)
            counts.unparsed += unparsed
        if lines:
            append("")
            self._out.write("\n".join(lines))

    def flush(self) -> None:
        self._out.flush()

    def summary(self) -> str:
        text = f"{self.counts.hits} hits"
        if self.counts.lost:
            text += f", {self.counts.lost} lost (buffer full: raise buffer_size_kb or narrow the probes)"
        if self.counts.unparsed:
            text += f", {self.counts.unparsed} unparsed lines (the first: {self.counts.first_unparsed!r})"
        return text
