"""Probe sets as files (`kpctl apply -f`): a YAML document naming a set and its probes,
parsed and checked without touching the kernel. Every error names the file, the line
and the field::

    name: slow-reads          # the set: [A-Za-z0-9_.-]+
    owner: storage-team       # optional, shown by kpctl list
    group: kpctl              # optional, kpctl's group by default
    probes:
      - target: vfs_read      # SYMBOL, SYMBOL+OFFSET, MODULE:SYMBOL, 0xADDRESS
        name: vfs_read_size   # optional: kpctl's default name for the target
        kind: entry           # entry (default) or return
        args: ['size=$arg3:u64']
        filter: 'size >= 65536'
        maxactive: 16         # return probes only
        backend: tracefs      # tracefs (default) or kmod
        enabled: true
"""
from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from typing import Any, BinaryIO

from kpctl import KPCTL_GROUP
from kpctl.errors import KpctlError, UsageError, clipped, clipped_path
from kpctl.limits import MAX_EVENT_NAME_LEN, MAX_MAXACTIVE
from kpctl.model import Probe, parse_fetch_arg, probes_from_targets

_SET_NAME = re.compile(r"[A-Za-z0-9_.-]+")
# Bounds on what a set file may make kpctl do: a set of a thousand probes is a few
# hundred KiB; YAML's aliases can make a few hundred bytes stand for billions of nodes.
MAX_SET_BYTES = 1 << 20
MAX_SET_DEPTH = 32
MAX_SET_NODES = 100_000
# The longest integer a set may hold: 64 bits in binary, with room for a sign and '_'s.
_MAX_INT_CHARS = 100
_SET_FIELDS = {"name", "owner", "group", "probes"}
_PROBE_FIELDS = {"target", "name", "kind", "args", "filter", "maxactive", "backend", "enabled"}


@dataclass(frozen=True)
class SetProbe:
    probe: Probe
    filter: str | None
    backend: str
    enabled: bool
    line: int  # where the file defines it, for errors found later (an unknown backend)


@dataclass(frozen=True)
class ProbeSet:
    name: str
    owner: str | None
    group: str
    probes: tuple[SetProbe, ...]
    source: str  # the file's name, for errors


class ProbeSetError(UsageError):
    """A file that is not a valid probe set: nothing was changed."""


class _Located(dict[Any, Any]):
    """A YAML mapping that remembers the line of each key (1-based)."""
    line = 0
    lines: dict[Any, int]


def read_probe_set(path: str, stdin: BinaryIO) -> str:
    """The text of a set file ('-': stdin), refused when it is not a regular file (a
    FIFO or a device could block or never end), larger than MAX_SET_BYTES, or not UTF-8."""
    source = "<stdin>" if path == "-" else path
    if path == "-":
        data = stdin.read(MAX_SET_BYTES + 1)
    else:
        try:
            # O_NONBLOCK: opening a FIFO must not wait for a writer before it is refused.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
        except OSError as e:
            raise ProbeSetError(f"{clipped_path(path)}: cannot read it: {e.strerror}") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # before fdopen(), which refuses a directory itself
            os.close(fd)
            raise ProbeSetError(f"{clipped_path(path)}: not a regular file", "give a YAML file, or - for stdin")
        with os.fdopen(fd, "rb") as file:
            try:
                data = file.read(MAX_SET_BYTES + 1)
            except OSError as e:
                raise ProbeSetError(f"{clipped_path(path)}: cannot read it: {e.strerror}") from None
    if len(data) > MAX_SET_BYTES:
        raise ProbeSetError(f"{clipped_path(source)}: larger than {MAX_SET_BYTES >> 20} MiB: not a probe set")
    try:
        return data.decode()
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise ProbeSetError(f"{clipped_path(source)}:{line}: not UTF-8 text (byte {data[e.start]:#04x})") from None


def _loader(source: str) -> Any:
    import yaml  # only apply needs it

    class Loader(yaml.SafeLoader):
        """A SafeLoader that keeps lines, refuses a key given twice, and bounds nesting
        and what aliases expand to (a billion laughs is 400 bytes)."""
        def __init__(self, stream: str) -> None:
            super().__init__(stream)
            self.depth = 0
            # Of each node composed so far, how many it stands for with its aliases expanded.
            self.sizes: dict[int, int] = {}

        def compose_node(self, parent: Any, index: Any) -> Any:
            event = self.peek_event()  # type: ignore[no-untyped-call]
            line = event.start_mark.line + 1
            sizes = self.sizes
            if isinstance(event, yaml.AliasEvent) and id(self.anchors.get(event.anchor)) not in sizes:
                if event.anchor in self.anchors:  # still being composed: the alias is inside it
                    raise ProbeSetError(f"{source}:{line}: an alias inside its own anchor")
            self.depth += 1
            if self.depth > MAX_SET_DEPTH:
                raise ProbeSetError(f"{source}:{line}: nested more than {MAX_SET_DEPTH} deep")
            try:
                node = super().compose_node(parent, index)
            finally:
                self.depth -= 1
            if id(node) not in sizes:  # a new node, not an alias of one
                children = (node.value if isinstance(node, yaml.SequenceNode)
                            else [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else [])
                sizes[id(node)] = 1 + sum(sizes[id(c)] for c in children)
                # And the nodes made so far: a flat list of a million values is refused
                # at its 100,001st, not after YAML has read them all.
                if sizes[id(node)] > MAX_SET_NODES or len(sizes) > MAX_SET_NODES:
                    raise ProbeSetError(f"{source}:{line}: more than {MAX_SET_NODES} values, aliases expanded")
            return node

        def construct_yaml_int(self, node: Any) -> Any:
            length = len(node.value)
            if length > _MAX_INT_CHARS:  # int() takes seconds over 100,000 digits, and refuses 4,300
                raise ProbeSetError(f"{source}:{node.start_mark.line + 1}: a number {length} characters long: "
                                    "no field takes one")
            return super().construct_yaml_int(node)

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            mapping = _Located(super().construct_mapping(node, deep=deep))
            mapping.line = node.start_mark.line + 1
            mapping.lines = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in mapping.lines:
                    raise ProbeSetError(f"{source}:{key_node.start_mark.line + 1}: {_shown(key)}: given twice "
                                        f"(first on line {mapping.lines[key]})")
                mapping.lines[key] = key_node.start_mark.line + 1
            return mapping

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, Loader.construct_mapping)
    Loader.add_constructor("tag:yaml.org,2002:int", Loader.construct_yaml_int)
    return yaml, Loader


def _shown(value: object) -> str:
    """A value of the file as a message may quote it: bounded, however large or deep."""
    import reprlib

    shown = reprlib.Repr()
    shown.maxlevel, shown.maxstring, shown.maxother = 2, 60, 60
    return shown.repr(value)


def parse_probe_set(text: str, source: str) -> ProbeSet:
    """The set text defines; ProbeSetError naming source:line and the field when it is
    not a valid one."""
    source = clipped_path(source)
    yaml, loader = _loader(source)
    try:
        document = yaml.load(text, Loader=loader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise ProbeSetError(f"{where}: not valid YAML: {clipped(str(getattr(e, 'problem', None) or e))}") from None
    except TypeError:  # a mapping or list as a key: the key check cannot hash it
        raise ProbeSetError(f"{source}: a key is a mapping or a list: keys are names") from None
    if not isinstance(document, _Located):
        raise ProbeSetError(f"{source}: a probe set is a mapping with name and probes")

    def fail(mapping: _Located, key: str | None, field: str, message: str) -> ProbeSetError:
        line = mapping.lines.get(key, mapping.line) if key is not None else mapping.line
        return ProbeSetError(f"{source}:{line}: {field}: {message}")

    def text_field(mapping: _Located, key: str, field: str, required: bool = False) -> str | None:
        value = mapping.get(key)
        if value is None:
            if required:
                raise fail(mapping, None, field, "missing")
            return None
        if not isinstance(value, str) or not value:
            raise fail(mapping, key, field, f"must be a non-empty string, not {_shown(value)}")
        return value

    unknown = sorted(set(document) - _SET_FIELDS, key=str)
    if unknown:
        raise fail(document, unknown[0], clipped(str(unknown[0])), f"unknown field (fields: {', '.join(sorted(_SET_FIELDS))})")
    name = text_field(document, "name", "name", required=True) or ""
    if not _SET_NAME.fullmatch(name):
        raise fail(document, "name", "name", f"{_shown(name)} is not a set name ([A-Za-z0-9_.-]+)")
    if len(name) > MAX_EVENT_NAME_LEN:
        raise fail(document, "name", "name", f"a set name has at most {MAX_EVENT_NAME_LEN} characters")
    group = text_field(document, "group", "group") or KPCTL_GROUP
    entries = document.get("probes")
    if not isinstance(entries, list):
        raise fail(document, "probes" if "probes" in document else None, "probes", "must be a list of probes")
    probes: list[SetProbe] = []
    for i, entry in enumerate(entries):
        field = f"probes[{i}]"
        if not isinstance(entry, _Located):
            raise fail(document, "probes", field, "must be a mapping with a target")
        unknown = sorted(set(entry) - _PROBE_FIELDS, key=str)
        if unknown:
            raise fail(entry, unknown[0], f"{field}.{clipped(str(unknown[0]))}",
                       f"unknown field (fields: {', '.join(sorted(_PROBE_FIELDS))})")
        target = text_field(entry, "target", f"{field}.target", required=True) or ""
        kind = entry.get("kind", "entry")
        if kind not in ("entry", "return"):
            raise fail(entry, "kind", f"{field}.kind", f"must be entry or return, not {_shown(kind)}")
        args = entry.get("args", [])
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise fail(entry, "args", f"{field}.args", "must be a list of fetch arguments ([NAME=]FETCH[:TYPE])")
        maxactive = entry.get("maxactive")
        if maxactive is not None and (not isinstance(maxactive, int) or isinstance(maxactive, bool)
                                      or not 0 <= maxactive <= MAX_MAXACTIVE):
            raise fail(entry, "maxactive", f"{field}.maxactive", f"must be an integer from 0 to {MAX_MAXACTIVE}, "
                                                                 f"not {_shown(maxactive)}")
        enabled = entry.get("enabled", True)
        if not isinstance(enabled, bool):
            raise fail(entry, "enabled", f"{field}.enabled", f"must be true or false, not {_shown(enabled)}")
        for j, arg in enumerate(args):
            try:
                parse_fetch_arg(arg)
            except KpctlError as e:
                raise fail(entry, "args", f"{field}.args[{j}]", e.message) from None
        if "," in target:
            raise fail(entry, "target", f"{field}.target", "one target per probe")
        try:
            [probe] = probes_from_targets(target, args, kind == "return", maxactive,
                                          text_field(entry, "name", f"{field}.name"), group)
        except KpctlError as e:
            raise fail(entry, "target", field, e.message) from None
        if any(p.probe.event == probe.event for p in probes):
            raise fail(entry, "name" if "name" in entry else "target", f"{field}.name",
                       f"{probe.event} names two probes of the set")
        probes.append(SetProbe(probe, text_field(entry, "filter", f"{field}.filter"),
                               text_field(entry, "backend", f"{field}.backend") or "tracefs", enabled, entry.line))
    return ProbeSet(name, text_field(document, "owner", "owner"), group, tuple(probes), source)
