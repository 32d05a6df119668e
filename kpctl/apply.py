"""`kpctl apply -f`: the kernel's probes made to match a probe set's file, idempotently.

A set owns the probes it made (their records in kpctl.owners say so). Applying adds the
file's probes that are missing, replaces those whose definition, filter or backend
changed, enables or disables those whose state differs, and with prune removes the
set's probes that the file no longer names. A probe of the same name that the set does
not own (added by hand, or by another set) is never touched: that is an error. The
changes are planned in full before the first one is made, and if the kernel refuses
one, those already made are undone.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from kpctl.backends.base import ProbeInfo
from kpctl.errors import KpctlError, ProbeExistsError
from kpctl.manager import ProbeManager
from kpctl.model import format_probe
from kpctl.owners import Owners
from kpctl.probeset import ProbeSet, ProbeSetError, SetProbe
from kpctl.registry import backend_type


@dataclass
class Plan:
    """What applying a set changes, by probe name; before (the kernel's) and after (the
    file's) definitions for the diff."""
    probe_set: str
    added: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    enabled: list[str] = field(default_factory=list)
    disabled: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    before: dict[str, str] = field(default_factory=dict)
    after: dict[str, str] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.added or self.replaced or self.removed or self.enabled or self.disabled)

    def as_json(self) -> dict[str, Any]:
        return {"set": self.probe_set, "changed": self.changed, "added": self.added, "replaced": self.replaced,
                "removed": self.removed, "enabled": self.enabled, "disabled": self.disabled,
                "unchanged": self.unchanged}

    def diff(self) -> list[str]:
        """Changed definitions as a diff: '-' the kernel's, '+' the file's."""
        lines = []
        for name in sorted(set(self.before) | set(self.after)):
            old, new = self.before.get(name), self.after.get(name)
            if old == new:
                continue
            lines += [f"-{old}"] * (old is not None) + [f"+{new}"] * (new is not None)
        return lines


def described(probe: SetProbe | ProbeInfo) -> str:
    """A probe as the diff shows it: its kprobe_events line, then its filter, backend
    and state."""
    backend, line = probe.backend, format_probe(probe.probe)
    enabled = probe.enabled
    return f"{line}  [{backend}{', disabled' if not enabled else ''}{f', filter: {probe.filter}' if probe.filter else ''}]"


def _definition(probe: SetProbe | ProbeInfo) -> tuple[str, str | None, str]:
    return format_probe(probe.probe), probe.filter or None, probe.backend


def plan(manager: ProbeManager, owners: Owners, probe_set: ProbeSet, prune: bool = False,
         delete: bool = False) -> Plan:
    """What apply() would change, asking nothing of the kernel but its probe list."""
    for wanted in probe_set.probes:
        try:
            kind = backend_type(wanted.backend)
        except KpctlError as e:
            raise ProbeSetError(f"{probe_set.source}:{wanted.line}: backend: {e.message}") from None
        if not kind.outlives_kpctl:
            raise ProbeSetError(f"{probe_set.source}:{wanted.line}: backend: {kind.name}'s probes die with kpctl: "
                                f"a set's need tracefs or kmod")
        manager.backend(kind.name)  # says why when it cannot work here
    current = {info.name: info for info in manager.list_probes()}
    members = set(owners.members(probe_set.group, probe_set.name))
    result = Plan(probe_set.name)
    wanted_names = set() if delete else {p.probe.event for p in probe_set.probes}
    for wanted in [] if delete else probe_set.probes:
        name = wanted.probe.event or ""
        result.after[name] = described(wanted)
        info = current.get(name)
        if info is None:
            result.added.append(name)
            continue
        result.before[name] = described(info)
        if name not in members:
            owner = owners.owner(probe_set.group, name)
            raise ProbeExistsError(f"{probe_set.group}/{name} exists and is not set {probe_set.name}'s "
                                   f"(owner: {owner or 'none recorded'})", "remove it, or name the set's probe otherwise")
        if _definition(info) != _definition(wanted):
            result.replaced.append(name)
        elif info.enabled != wanted.enabled:
            (result.enabled if wanted.enabled else result.disabled).append(name)
        else:
            result.unchanged.append(name)
    if prune or delete:
        for name in sorted(members - wanted_names):
            if name in current:
                result.removed.append(name)
                result.before[name] = described(current[name])
    return result


def apply(manager: ProbeManager, owners: Owners, probe_set: ProbeSet, prune: bool = False,
          delete: bool = False) -> Plan:
    """Make the kernel's probes match probe_set (with delete: remove them all); what
    changed. All or nothing: a change the kernel refuses undoes the ones before it."""
    result = plan(manager, owners, probe_set, prune, delete)
    by_name = {p.probe.event: p for p in probe_set.probes}
    current = {info.name: info for info in manager.list_probes()}
    group = probe_set.group
    undo: list[Callable[[], None]] = []
    try:
        for name in result.removed + result.replaced:
            manager.remove([name])
            undo.append(partial(_restore, manager, current[name]))
        for name in result.replaced + result.added:
            wanted = by_name[name]
            if name in result.added:
                owners.claim_for_set(group, name, probe_set.name, probe_set.owner)
                undo.append(partial(owners.release, group, name))
            manager.add([wanted.probe], enable=wanted.enabled, event_filter=wanted.filter, backend=wanted.backend)
            undo.append(partial(manager.remove, [name]))
        for name in result.enabled:
            manager.enable([name])
            undo.append(partial(manager.disable, [name]))
        for name in result.disabled:
            manager.disable([name])
            undo.append(partial(manager.enable, [name]))
    except KpctlError:
        for step in reversed(undo):
            step()
        raise
    for name in result.removed:
        owners.release(group, name)
    return result


def _restore(manager: ProbeManager, info: ProbeInfo) -> None:
    manager.add([info.probe], enable=info.enabled, event_filter=info.filter, backend=info.backend)
