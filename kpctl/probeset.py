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

import re
from dataclasses import dataclass
from typing import Any

from kpctl import KPCTL_GROUP
from kpctl.errors import KpctlError, UsageError
from kpctl.model import Probe, parse_fetch_arg, probes_from_targets

_SET_NAME = re.compile(r"[A-Za-z0-9_.-]+")
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


def _loader(text: str) -> Any:
    import yaml  # only apply needs it

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            mapping = _Located(super().construct_mapping(node, deep=deep))
            mapping.line = node.start_mark.line + 1
            mapping.lines = {self.construct_object(k, deep=deep): k.start_mark.line + 1 for k, _ in node.value}
            return mapping

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, Loader.construct_mapping)
    return yaml, Loader


def parse_probe_set(text: str, source: str) -> ProbeSet:
    """The set text defines; ProbeSetError naming source:line and the field when it is
    not a valid one."""
    yaml, loader = _loader(text)
    try:
        document = yaml.load(text, Loader=loader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise ProbeSetError(f"{where}: not valid YAML: {getattr(e, 'problem', None) or e}") from None
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
            raise fail(mapping, key, field, f"must be a non-empty string, not {value!r}")
        return value

    unknown = sorted(set(document) - _SET_FIELDS, key=str)
    if unknown:
        raise fail(document, unknown[0], str(unknown[0]), f"unknown field (fields: {', '.join(sorted(_SET_FIELDS))})")
    name = text_field(document, "name", "name", required=True) or ""
    if not _SET_NAME.fullmatch(name):
        raise fail(document, "name", "name", f"{name!r} is not a set name ([A-Za-z0-9_.-]+)")
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
            raise fail(entry, unknown[0], f"{field}.{unknown[0]}",
                       f"unknown field (fields: {', '.join(sorted(_PROBE_FIELDS))})")
        target = text_field(entry, "target", f"{field}.target", required=True) or ""
        kind = entry.get("kind", "entry")
        if kind not in ("entry", "return"):
            raise fail(entry, "kind", f"{field}.kind", f"must be entry or return, not {kind!r}")
        args = entry.get("args", [])
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise fail(entry, "args", f"{field}.args", "must be a list of fetch arguments ([NAME=]FETCH[:TYPE])")
        maxactive = entry.get("maxactive")
        if maxactive is not None and (not isinstance(maxactive, int) or isinstance(maxactive, bool) or maxactive < 1):
            raise fail(entry, "maxactive", f"{field}.maxactive", f"must be a positive integer, not {maxactive!r}")
        enabled = entry.get("enabled", True)
        if not isinstance(enabled, bool):
            raise fail(entry, "enabled", f"{field}.enabled", f"must be true or false, not {enabled!r}")
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
