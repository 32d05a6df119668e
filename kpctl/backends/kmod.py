"""kpctl_kmod as a kpctl backend (kpctl/backends/base.py): the module's probes listed,
counted, enabled and watched like the tracefs ones.

The module keeps one namespace of probe names, whatever kpctl group is asked for, and
records no fetch arguments: its hits carry the probe, the address, and for return probes
the return value and the latency. Its trace events are enabled in kpctl's own tracefs
instance, so one trace_pipe carries the hits of both backends. They print like kprobe
hits with the probe's name as their first argument (kmod/kpctl_trace.h):
`kprobe_hit: (vfs_read+0x0/0x310) name=reads id=3`, and are shown under that name.
"""
from __future__ import annotations

import errno
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Literal

from kpctl.backends.base import ProbeInfo, ProbeStats
from kpctl.errors import ProbeExistsError, TracefsError, UsageError, check_probe_names
from kpctl.kmod import loader
from kpctl.kmod.client import KmodClient, KmodError
from kpctl.kmod.messages import Kind, KmodProbe, KprobeFlag
from kpctl.model import Probe, Target, default_event_name
from kpctl.tracefs import KPCTL_INSTANCE, Tracefs, find_tracefs

if TYPE_CHECKING:
    from kpctl.hits import ProbeNamer
    from kpctl.symbols import KernelSymbols
    from kpctl.watch import HitSource

EVENT_SYSTEM = "kpctl_kmod"  # TRACE_SYSTEM of kmod/kpctl_trace.h
HIT_EVENTS = ("kprobe_hit", "kretprobe_hit")
_NAME_ARG = re.compile(r" name=(\S*)")


def probe_of_hit(args: str) -> tuple[str, str] | None:
    """(probe name, the arguments after it) of a module event's argument text."""
    m = _NAME_ARG.match(args)
    return (m.group(1), args[m.end():]) if m is not None else None


PROBE_NAMERS: Mapping[str, ProbeNamer] = dict.fromkeys(HIT_EVENTS, probe_of_hit)


def to_probe(kp: KmodProbe) -> Probe:
    kind: Literal["p", "r"] = "r" if kp.kind is Kind.RETURN else "p"
    module, _, symbol = kp.symbol.rpartition(":")
    return Probe(kind, Target(symbol=symbol, offset=kp.offset, module=module or None), event=kp.name,
                 maxactive=kp.maxactive)


def module_symbol(target: Target) -> str:
    """The symbol as the module takes it: MOD:SYM, which kallsyms_lookup_name() resolves."""
    return f"{target.module}:{target.symbol}" if target.module else target.symbol or ""


def flag_names(flags: KprobeFlag) -> tuple[str, ...]:
    """As debug/kprobes/list prints them, e.g. ("DISABLED", "FTRACE")."""
    return tuple(f.name for f in KprobeFlag if f in flags and f.name)


def state_names(kp: KmodProbe) -> tuple[str, ...]:
    """flag_names(), with a probe whose module went away saying which: it re-arms
    when that module is loaded again."""
    return tuple(f"gone: {kp.module} unloaded" if name == "GONE" and kp.module else name
                 for name in flag_names(kp.flags))


def _unique_symbol(symbols: KernelSymbols, probe: Probe) -> str:
    """The name to send the module: MOD:SYM where a module is named. A name kallsyms has
    several times is refused as kprobe_events refuses it since v6.7 and 6.1.60 (commit
    b022f0c7e404, "tracing/kprobes: Return EADDRNOTAVAIL when func matches several
    symbols"); kprobes itself would take the first silently."""
    target = probe.target
    symbol = target.symbol or ""
    functions = symbols.functions_named(symbol, target.module)
    if len(functions) > 1:
        where = ", ".join(f"{f.address:#x}" + (f" [{f.module}]" if f.module else "") for f in functions)
        per_module = Counter(f.module for f in functions)
        named = sorted(f"{m}:{symbol}" for m, n in per_module.items() if m is not None and n == 1)
        hint = (f"name one as {' or '.join(named)}" if named else "no MOD:SYM names one") + (
            "; the module takes no bare address: use --backend tracefs with one" if len(named) < len(functions) else "")
        raise KmodError(f"{target} is not unique: {len(functions)} functions have this name ({where})",
                        errno.EADDRNOTAVAIL, hint)
    return module_symbol(target)


class KmodBackend:
    name = "kmod"
    hits_in_tracefs = True

    def __init__(self, tracefs: Tracefs, group: str, instance: str = KPCTL_INSTANCE) -> None:
        self.tracefs = tracefs
        self.group = group
        self.instance = instance
        self.client = KmodClient()

    def close(self) -> None:
        self.client.close()

    def _by_name(self, names: Sequence[str]) -> list[KmodProbe]:
        probes = {p.name: p for p in self.client.dump()}
        check_probe_names(names, probes, "kpctl_kmod")
        return [probes[n] for n in names]

    @staticmethod
    def _check(probes: Sequence[Probe], event_filter: str | None) -> None:
        for probe in probes:
            if probe.args:
                raise UsageError("the kmod backend records no fetch arguments", "drop them, or use --backend tracefs")
            if probe.target.symbol is None:
                raise UsageError(f"the kmod backend probes kernel symbols only, not {probe.target}")
        if event_filter is not None:
            raise UsageError("the kmod backend has no per-probe filters", "filter in watch: --pid, --comm")

    def requests(self, probes: Sequence[Probe], *, enable: bool = True, event_filter: str | None = None) -> list[str]:
        self._check(probes, event_filter)
        return [
            f"netlink {EVENT_SYSTEM} ADD name={p.event or default_event_name(p.target, p.is_return)} "
            f"symbol={module_symbol(p.target)} offset={p.target.offset} kind={'return' if p.is_return else 'entry'}"
            + (f" maxactive={p.maxactive}" if p.maxactive else "") + f" enabled={int(enable)}"
            for p in probes
        ]

    def add(self, probes: Sequence[Probe], *, enable: bool = True, event_filter: str | None = None) -> list[ProbeInfo]:
        self._check(probes, event_filter)
        added: list[KmodProbe] = []
        try:
            for probe in probes:
                kind = Kind.RETURN if probe.is_return else Kind.ENTRY
                name = probe.event or default_event_name(probe.target, probe.is_return)
                added.append(self.client.add(
                    _unique_symbol(self.tracefs.symbols, probe), name, offset=probe.target.offset, kind=kind,
                    maxactive=probe.maxactive or None, enabled=enable,
                ))
        except KmodError as e:
            for done in added:  # all or nothing
                self.client.remove(done.id)
            if e.errno == errno.EEXIST:
                raise ProbeExistsError(e.message, "see: kpctl list") from None
            raise
        self._record_hits()
        return [self._info(p) for p in added]

    def _info(self, kp: KmodProbe) -> ProbeInfo:
        return ProbeInfo(to_probe(kp), kp.enabled, None, self.name, state_names(kp), kp.address)

    def remove(self, names: Sequence[str]) -> None:
        for probe in self._by_name(names):
            self.client.remove(probe.id)
        self._stop_recording_when_empty()

    def remove_all(self) -> list[str]:
        probes = self.client.dump()
        for probe in probes:
            self.client.remove(probe.id)
        self._stop_recording_when_empty()
        return [p.name for p in probes]

    def enable(self, names: Sequence[str]) -> None:
        for probe in self._by_name(names):
            self.client.enable(probe.id)

    def disable(self, names: Sequence[str]) -> None:
        for probe in self._by_name(names):
            self.client.disable(probe.id)

    def list_probes(self) -> list[ProbeInfo]:
        return [self._info(p) for p in self.client.dump()]

    def stats(self) -> list[ProbeStats]:
        return [ProbeStats(p.name, p.hits, p.missed, self.name) for p in self.client.dump()]

    def probe_namers(self) -> Mapping[str, ProbeNamer]:
        return PROBE_NAMERS

    def hit_sources(self) -> list[HitSource]:
        return []  # hits are trace events in a tracefs instance

    def _record_hits(self) -> None:
        """The module's trace events on in kpctl's instance, as kprobe events are from
        their add on: hits wait there for the next watch."""
        self.tracefs.make_instance(self.instance)
        self.record_into(self.instance)

    def record_into(self, instance: str) -> None:
        self._switch_events(instance, True)

    def _switch_events(self, instance: str, on: bool) -> None:
        self.tracefs.write_value(f"{instance}/events/{EVENT_SYSTEM}/enable", "1" if on else "0")

    def _stop_recording_when_empty(self) -> None:
        if self.client.dump() or not self.tracefs.path(self.instance).is_dir():
            return
        self._switch_events(self.instance, False)
        self.tracefs.remove_idle_instance(self.instance)


def unload() -> None:
    """Unload the module, and kpctl's instance with it when nothing else records there
    any more (no tracefs mounted means no instance either)."""
    loader.unload()
    try:
        Tracefs(find_tracefs(mount=False)).remove_idle_instance(KPCTL_INSTANCE)
    except TracefsError:
        pass
