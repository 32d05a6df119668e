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
looked at one by one. Output renders what recurs from hit to hit (a thread's task, thread
and CPU; a probe's name and place) once per distinct text, and --json takes the argument
values whose JSON is at hand straight from their text. Output splits a chunk by the same
regex into its spans (a filter's pick: its matches' spans) and arranges them with C-level
map()s, --json's arguments a probe at a time, column by column: no Python code runs per
hit but a filter's test.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain, islice, repeat
from json.encoder import encode_basestring_ascii
from operator import itemgetter, methodcaller
from typing import IO, Any, Generic, NamedTuple, TypeVar, Union

from kpctl.model import INTEGER_BITS, ArgType, Probe

# An optional part is written (?:X|), not (?:X)?: the same match, but sre runs the latter
# as a REPEAT, a tenth of the parse. ASCII classes: the kernel prints the fields they
# match (numbers, event and module names, flags) in ASCII, and they are faster.
# WHO (task, thread, CPU) and WHAT (event and place) are spans that recur from hit to hit;
# the fields inside each depend on its text alone.
_WHO_TEXT = r" *(.*?)-(\d+) +(?:\( *[\d-]+\) +|)\[(\d+)\]"
_WHAT_TEXT = r"(\w+): \((\[unknown/kretprobe'd\]|[^ )/]*)(?:/0x[0-9a-f]+|)(?: \[([\w-]+)\]|)(?: <- ([^)]*)|)\)"
_LINE_TEXT = r"^({who}) +(?:\S+ +|)([\d.]+): ({what})(.*)$"
_HIT_LINE = re.compile(_LINE_TEXT.format(who=_WHO_TEXT, what=_WHAT_TEXT), re.M | re.A)
_WHO, _COMM, _TID, _CPU, _TIME, _WHAT, _EVENT, _SITE, _MODULE, _FUNCTION, _ARGS = range(1, 12)
_WHO_FIELDS = re.compile(_WHO_TEXT, re.A)
_WHAT_FIELDS = re.compile(_WHAT_TEXT, re.A)


def _uncaptured(regex: str) -> str:
    """regex with its groups made non-capturing (the patterns above escape every literal paren)."""
    return re.sub(r"(?<!\\)\((?!\?)", "(?:", regex)


# The same lines as _HIT_LINE with four groups, WHO, time, WHAT and arguments: split() by it
# gives a chunk's spans in one flat list, five items a hit, that output turns into its
# lines with C-level map()s and slice assignments, no Python code run per hit.
_HIT_SPANS = re.compile(_LINE_TEXT.format(who=_uncaptured(_WHO_TEXT), what=_uncaptured(_WHAT_TEXT)), re.M | re.A)
_SPAN_ITEMS = 5
# A hit's items in that list from its _HIT_LINE match; the last, what follows, is a placeholder.
_SPANS_OF = methodcaller("group", _WHO, _TIME, _WHAT, _ARGS, 0)
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


_to_json_line = json.JSONEncoder(separators=(",", ":")).encode
_json_str = encode_basestring_ascii  # what _to_json_line does with a str, without its checks


# Printed values whose JSON is at hand: an integer (hex to convert, decimal as it is),
# text that JSON prints as it is (printable ASCII but a quote or backslash), and a string
# the kernel could not read, null.
_NUMBER = r"0x[0-9a-f]+|-?[1-9][0-9]*|0"
_PLAIN = r"!#-\[\]-~"  # a character class's body
_FAULT = r"\(fault\)"
_FAULT_JSON = {"(fault)": "null"}
_VALUE = "\0"  # where a value goes in its JSON's constant text


def _number_json(text: str) -> str:
    return str(int(text, 16)) if text.startswith("0x") else text


# Column by column: what turns the values' text (in one or more regex groups) into their JSON.
_Convert = Callable[..., Iterable[str]]


def _as_is(texts: Sequence[str]) -> Iterable[str]:
    return texts


def _numbers_json(texts: Sequence[str]) -> Iterable[str]:
    return map(repr, map(int, texts, repeat(0)))  # int(, 0) reads both of _NUMBER's forms; repr() is str()'s text, sooner


def _hex_json(texts: Sequence[str]) -> Iterable[str]:
    return map(repr, map(int, texts, repeat(16)))


def _faults_json(texts: Sequence[str]) -> Iterable[str]:
    return map(_FAULT_JSON.get, texts, texts)


def _untyped_json(numbers: Sequence[str], strings: Sequence[str]) -> Iterable[str]:
    """An untyped argument's column: each value in one of two groups, the other empty."""
    if "" not in numbers:
        return _numbers_json(numbers)
    if "" not in strings:
        return _faults_json(strings)
    return map(_number_json, _faults_json(list(map(str.__add__, numbers, strings))))


def _json_form(arg_type: ArgType | None) -> tuple[str, list[tuple[int, _Convert]], str] | None:
    """For values of arg_type whose JSON is at hand: the regex of their printed text, for
    each value in it (an array's elements are several) its groups and what turns their
    columns into JSON, and the JSON with _VALUE for each value. None for a type whose
    values always take parse_value()."""
    if arg_type is None:
        # untyped: a number or a string ($comm, "immediate")
        return f'({_NUMBER})|("[{_PLAIN}]*"|{_FAULT})', [(2, _untyped_json)], _VALUE
    if arg_type.array is not None:
        element_type = ArgType(arg_type.base, arg_type.bitfield)
        element = None if element_type.is_string or element_type.base in ("symbol", "char") else _json_form(element_type)
        if element is None or not arg_type.array:
            return None
        regex, columns, _ = element
        # TYPE[N] prints N elements: each has groups of its own
        return r"\{" + ",".join([regex] * arg_type.array) + r"\}", columns * arg_type.array, "[" + ",".join([_VALUE] * arg_type.array) + "]"
    if arg_type.base == "char":
        return None
    if arg_type.base == "symbol":
        return f"([{_PLAIN}]*)", [(1, _as_is)], f'"{_VALUE}"'
    if arg_type.is_string:
        return f'("[ {_PLAIN}]*"|{_FAULT})', [(1, _faults_json)], _VALUE
    # The kernel prints x types in hex, u and s types in decimal: JSON as it is.
    if arg_type.base in INTEGER_BITS:
        return ("(0x[0-9a-f]+)", [(1, _hex_json)], _VALUE) if arg_type.base[0] == "x" else ("(-?[1-9][0-9]*|0)", [(1, _as_is)], _VALUE)
    return f"({_NUMBER})", [(1, _numbers_json)], _VALUE


class _CompiledSchema:
    __slots__ = ("schema", "pattern", "_plain", "_pieces", "_columns")

    def __init__(self, schema: ArgSchema) -> None:
        self.schema = schema
        self.pattern = schema.splitter()
        # json_args()'s fast path: arguments whose every value has a form of _json_form()
        # (no space but in a string's quotes, so that they split as pattern does) go
        # between the object's constant pieces; _plain matches one argument text a line,
        # and each value has its groups (first, how many) and their conversion. None
        # where a type has no such form or two arguments share a name (a dict keeps one).
        self._plain: re.Pattern[str] | None = None
        self._pieces: list[str] = []
        self._columns: list[tuple[int, int, _Convert]] = []
        forms = [_json_form(t) for t in schema.types]
        if len(set(schema.names)) < len(schema.names) or None in forms:
            return
        fields = []
        first = 0
        for name, form in zip(schema.names, forms, strict=True):
            assert form is not None
            regex, columns, field = form
            fields.append((f" {re.escape(name)}=(?:{regex})", _json_str(name) + ":" + field))
            for groups, convert in columns:
                self._columns.append((first, groups, convert))
                first += groups
        self._plain = re.compile("^" + "".join(r for r, _ in fields) + "$", re.M)
        self._pieces = ("{" + ",".join(f for _, f in fields) + "}").split(_VALUE)

    def json_args(self, texts: list[str]) -> list[str]:
        """_to_json_line(parse_args(text, self)) of each text (one line's arguments), built
        from the values' text where it can be: all texts at once, column by column, with
        no Python code run per text but for arrays and untyped columns of mixed kinds."""
        plain = self._plain
        found = plain.findall("\n".join(texts)) if plain is not None else []
        if len(found) != len(texts):  # some take parse_value(): each on its own
            return [self.json_args([t])[0] if plain is not None and plain.fullmatch(t) else _to_json_line(parse_args(t, self))
                    for t in texts]
        if not self._columns:
            return ["{}"] * len(texts)
        groups: list[Sequence[str]] = list(zip(*found)) if isinstance(found[0], tuple) else [found]
        values = [convert(*groups[first:first + n]) for first, n, convert in self._columns]
        pieces = list(map(repeat, self._pieces))
        return list(map("".join, zip(pieces[0], *chain.from_iterable(zip(values, pieces[1:], strict=True)))))


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
        return Hit(match, self.schema(match.group(_EVENT)), self.namers)

    def schema(self, event: str) -> _CompiledSchema | None:
        return self._schemas.get(event)  # shared events have none


def hit_matches(text: str) -> Iterator[re.Match[str]]:
    """The fast path under HitParser.hits(): one match per hit line, nothing else built."""
    return _HIT_LINE.finditer(text)


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


# Rendered WHO and WHAT texts kept, past which they are rendered afresh: far more than
# the threads and probe places of a busy machine, and a long watch's memory stays bounded.
_KEPT = 1 << 14
_Kept = TypeVar("_Kept")


def _keep_all(kept: dict[str, _Kept], texts: list[str], render: Callable[[str], _Kept | None]) -> bool:
    """Whether each of texts has its rendering kept, rendering those not seen yet; False
    at the first that render() leaves to a hit's own line (None)."""
    new = set(texts).difference(kept)
    if len(kept) + len(new) > _KEPT:
        kept.clear()  # before the chunk, so that none of its own texts is dropped
        new = set(texts)
    for text in new:
        rendered = render(text)
        if rendered is None:
            return False
        kept[text] = rendered
    return True


def _fields(regex: re.Pattern[str], span: str) -> tuple[Any, ...]:
    """The groups of a WHO or WHAT span (_WHO_FIELDS, _WHAT_FIELDS)."""
    match = regex.fullmatch(span)
    assert match is not None  # span is what the same regex matched inside a hit line
    return match.groups()


class _Chunk(NamedTuple):
    lines: str  # the hits shown, a line each with its newline
    shown: int
    hits: int  # hit lines in the chunk, shown or not
    cut: bool  # whether --count ended the watch within the chunk
    only_hits: bool  # whether every line of the chunk is a hit: no LOST notice, nothing unparsed


class _Lines(Generic[_Kept]):
    """watch's output lines. A chunk goes through _HIT_SPANS's split in one go where no
    filter picks hits, a filter's pick the same way from its matches; hit by hit (line())
    where an event names its probe in its arguments (namers). WHO spans render to _who,
    WHAT spans to _what, each once."""

    def __init__(self, namers: Mapping[str, ProbeNamer]) -> None:
        self._namers = namers
        self._who: dict[str, str] = {}
        self._what: dict[str, _Kept] = {}

    def chunk(self, text: str, limit: int | None) -> _Chunk | None:
        """The lines of text's first limit hits (all when None), or None when one needs line()."""
        parts = _HIT_SPANS.split(text)
        hits = len(parts) // _SPAN_ITEMS
        # Between hits, and after the last, there is a newline alone unless the text has
        # other lines: this saves feed() two scans of the text looking for those.
        only_hits = not parts[0] and parts[_SPAN_ITEMS::_SPAN_ITEMS].count("\n") == hits
        shown = hits if limit is None else min(hits, limit)
        if not shown:
            return _Chunk("", 0, hits, hits > 0, only_hits)
        del parts[shown * _SPAN_ITEMS + 1:]
        lines = self._arranged(parts, shown)
        return None if lines is None else _Chunk(lines, shown, hits, shown < hits, only_hits)

    def of_matches(self, matches: list[re.Match[str]]) -> str:
        """The lines of these hits (a filter's pick): arranged as a chunk's, from their spans."""
        parts = [""]
        parts += chain.from_iterable(map(_SPANS_OF, matches))
        lines = self._arranged(parts, len(matches))
        return "".join(map(self.line, matches)) if lines is None else lines

    def _arranged(self, parts: list[str], hits: int) -> str | None:
        """The lines of _HIT_SPANS.split()'s list (text before the first hit, then WHO, time,
        WHAT, arguments and the text after, per hit), or None when a hit needs line()."""
        if not hits:
            return ""
        rendered = self._rendered(parts[1::_SPAN_ITEMS], parts[3::_SPAN_ITEMS])
        if rendered is None:
            return None
        self._arrange(parts, hits, *rendered)
        return "".join(parts)

    def _rendered(self, whos: list[str], whats: list[str]) -> tuple[list[str], list[_Kept]] | None:
        """What the WHO and WHAT spans render to, or None when a WHAT is left to line()."""
        def look() -> tuple[list[str], list[_Kept]]:
            return list(map(self._who.__getitem__, whos)), list(map(self._what.__getitem__, whats))
        try:
            return look()
        except KeyError:  # some not seen yet: render the new ones (rarely), and look again
            if not (_keep_all(self._who, whos, self._who_of) and _keep_all(self._what, whats, self._what_of)):
                return None
            return look()

    def _arrange(self, parts: list[str], hits: int, whos: list[str], whats: list[_Kept]) -> None:
        """Turns _arranged()'s list into the output's pieces, in place, with the WHO and WHAT
        spans' renderings."""
        raise NotImplementedError

    def line(self, m: re.Match[str]) -> str:
        raise NotImplementedError

    def _first(self, m: re.Match[str]) -> str:
        """line() of a WHO or WHAT not kept yet, or of an event named in its arguments."""
        who, what = m.group(_WHO, _WHAT)
        _keep_all(self._who, [who], self._who_of)
        return self.line(m) if _keep_all(self._what, [what], self._what_of) else self._named(m)

    def _who_of(self, who: str) -> str:
        raise NotImplementedError

    def _what_of(self, what: str) -> _Kept | None:
        """What a WHAT span renders to, or None for an event named in its arguments."""
        raise NotImplementedError

    def _named(self, m: re.Match[str]) -> str:
        """line() of a hit whose probe is named in its arguments."""
        raise NotImplementedError


class _TextLines(_Lines[str]):
    """watch's text lines: a hit's columns with the kernel's argument text as it is."""

    def _arrange(self, parts: list[str], hits: int, whos: list[str], whats: list[str]) -> None:
        parts[0] = ""
        parts[1::_SPAN_ITEMS] = map(str.rjust, parts[2::_SPAN_ITEMS], repeat(14, hits))
        parts[2::_SPAN_ITEMS] = whos
        parts[3::_SPAN_ITEMS] = whats
        parts[5::_SPAN_ITEMS] = repeat("\n", hits)

    def line(self, m: re.Match[str]) -> str:
        who, ts, what, args = m.group(_WHO, _TIME, _WHAT, _ARGS)
        try:
            return f"{ts.rjust(14)}{self._who[who]}{self._what[what]}{args}\n"
        except KeyError:
            return self._first(m)

    def _who_of(self, who: str) -> str:
        comm, tid, cpu = _fields(_WHO_FIELDS, who)
        return f" {cpu:>3} {tid:>7} {comm:<16} "

    def _what_of(self, what: str) -> str | None:
        event, site, module, function = _fields(_WHAT_FIELDS, what)
        return None if event in self._namers else f"{event:<20} {_where(site, module, function)}"

    def _named(self, m: re.Match[str]) -> str:
        ts, who, event, site, module, function, args = m.group(_TIME, _WHO, _EVENT, _SITE, _MODULE, _FUNCTION, _ARGS)
        probe, args = probe_name(event, args, self._namers)
        return f"{ts.rjust(14)}{self._who[who]}{probe:<20} {_where(site, module, function)}{args}\n"


# How a probe's argument texts become JSON: _CompiledSchema.json_args() or _untyped_json_args().
_ArgsJson = Callable[[list[str]], list[str]]


def _batched(functions: list[_ArgsJson], texts: list[str]) -> list[str]:
    """[f([text])[0] for f, text in zip(functions, texts)], with one call of each function
    for all its texts: texts sorted by function and back, in C."""
    keys = list(map(id, functions))
    counts = Counter(keys)
    if len(counts) == 1:
        return functions[0](texts)
    of_key = dict(zip(keys, functions))
    order = sorted(range(len(texts)), key=keys.__getitem__)
    ordered = list(map(texts.__getitem__, order))
    done: list[str] = []
    for key, n in sorted(counts.items()):
        done += of_key[key](ordered[len(done):len(done) + n])
    return list(map(done.__getitem__, sorted(range(len(texts)), key=order.__getitem__)))


class _JsonLines(_Lines[tuple[str, _ArgsJson]]):
    """watch --json's lines: one object per hit, every value typed. A WHAT span renders to
    the members up to "args" and how the arguments' text becomes JSON."""

    def __init__(self, parser: HitParser, backend_of: Mapping[str, str]) -> None:
        super().__init__(parser.namers)
        self._parser = parser
        self._backend_of = backend_of

    def _arrange(self, parts: list[str], hits: int, whos: list[str], whats: list[tuple[str, _ArgsJson]]) -> None:
        parts[0] = '{"time":'
        parts[1::_SPAN_ITEMS] = map(repr, map(float, parts[2::_SPAN_ITEMS]))
        parts[2::_SPAN_ITEMS] = whos
        parts[3::_SPAN_ITEMS] = map(itemgetter(0), whats)
        parts[4::_SPAN_ITEMS] = _batched(list(map(itemgetter(1), whats)), parts[4::_SPAN_ITEMS])
        parts[5::_SPAN_ITEMS] = repeat('}\n{"time":', hits)
        parts[-1] = "}\n"

    def line(self, m: re.Match[str]) -> str:
        who, ts, what, args = m.group(_WHO, _TIME, _WHAT, _ARGS)
        try:
            who_json, (what_json, args_json) = self._who[who], self._what[what]
        except KeyError:
            return self._first(m)
        return f'{{"time":{float(ts)!r}{who_json}{what_json}{args_json([args])[0]}}}\n'

    def _who_of(self, who: str) -> str:
        comm, tid, cpu = _fields(_WHO_FIELDS, who)
        return f',"cpu":{int(cpu)},"tid":{int(tid)},"comm":{_json_str(comm)},'

    def _what_of(self, what: str) -> tuple[str, _ArgsJson] | None:
        event, site, module, function = _fields(_WHAT_FIELDS, what)
        return None if event in self._namers else (self._members(event, site, module, function), self._args_json(event))

    def _named(self, m: re.Match[str]) -> str:
        ts, who, event, site, module, function, args = m.group(_TIME, _WHO, _EVENT, _SITE, _MODULE, _FUNCTION, _ARGS)
        probe, args = probe_name(event, args, self._namers)
        return f'{{"time":{float(ts)!r}{self._who[who]}{self._members(probe, site, module, function)}{self._args_json(event)([args])[0]}}}\n'

    def _members(self, probe: str, site: str, module: str | None, function: str | None) -> str:
        return (f'"probe":{_json_str(probe)},"backend":{_json_str(self._backend_of.get(probe, ""))},'
                f'"where":{_json_str(_where(site, module, function))},"args":')

    def _args_json(self, event: str) -> _ArgsJson:
        schema = self._parser.schema(event)
        return schema.json_args if schema is not None else _untyped_json_args


def _untyped_json_args(texts: list[str]) -> list[str]:
    return [_to_json_line(parse_args(text, None)) for text in texts]


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
        self.counts = HitCounts()
        self._lines: _Lines[Any] = _JsonLines(self._parser, backend_of or {}) if as_json else _TextLines(self._parser.namers)

    @property
    def done(self) -> bool:
        return self._remaining is not None and self._remaining <= 0

    def only_threads(self, threads: Container[str]) -> None:
        """From now on, only hits of these thread ids (as trace_pipe prints them)."""
        self._threads = threads

    def feed(self, text: str) -> None:
        """Handle whole lines of trace_pipe text."""
        counts, remaining = self.counts, self._remaining
        wanted = self._wanted_in(text)
        chunk = (self._lines.chunk(text, remaining) if wanted is None else None) or self._picked(text, wanted, remaining)
        out = chunk.lines
        if remaining is not None:
            self._remaining = remaining - chunk.shown
        counts.hits += chunk.shown
        if not (chunk.cut or chunk.only_hits):  # all of text was seen: account for every line
            lost = lost_events(text)
            for cpu_no, n in lost:
                counts.lost += n
                out += (_to_json_line({"lost": n, "cpu": cpu_no}) if self._as_json else f"LOST {n} events on CPU {cpu_no}") + "\n"
            unparsed = text.count("\n") - chunk.hits - len(lost)
            if unparsed and counts.first_unparsed is None:
                counts.first_unparsed = _first_unparsed(text)
            counts.unparsed += unparsed
        if out:
            self._out.write(out)

    def _picked(self, text: str, wanted: Callable[[re.Match[str]], bool] | None, remaining: int | None) -> _Chunk:
        # Matching the whole text first, then rendering, is faster than taking turns.
        matches = list(hit_matches(text))
        hits = iter(matches) if wanted is None else filter(wanted, matches)
        # --count: a hit past the last to print shows that the watch ends within this text.
        shown = list(hits if remaining is None else islice(hits, remaining + 1))
        cut = remaining is not None and len(shown) > remaining
        if cut:
            del shown[remaining:]
        return _Chunk(self._lines.of_matches(shown), len(shown), len(matches), cut, False)

    def _wanted_in(self, text: str) -> Callable[[re.Match[str]], bool] | None:
        """Whether a hit of text is to be printed, or None when every one is."""
        events, threads, comm, namers = self._events, self._threads, self._comm, self._parser.namers
        # A thread id is printed as "-TID ": without that text, no hit of text is the watcher's.
        own_pid = self._own_pid if self._own_pid is not None and f"-{self._own_pid} " in text else None
        if events is None and threads is None and comm is None and own_pid is None:
            return None

        def wanted(m: re.Match[str]) -> bool:
            event, args, tid = m.group(_EVENT, _ARGS, _TID)
            if events is not None and probe_name(event, args, namers)[0] not in events:
                return False
            return tid != own_pid and (threads is None or tid in threads) and (comm is None or m.group(_COMM) == comm)
        return wanted

    def flush(self) -> None:
        self._out.flush()

    def summary(self) -> str:
        text = f"{self.counts.hits} hits"
        if self.counts.lost:
            text += f", {self.counts.lost} lost (buffer full: raise buffer_size_kb or narrow the probes)"
        if self.counts.unparsed:
            text += f", {self.counts.unparsed} unparsed lines (the first: {self.counts.first_unparsed!r})"
        return text
