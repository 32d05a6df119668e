"""The tracefs backend: kprobes through kprobe_events, hits in kpctl's tracefs instance.

Rules this backend keeps, each for a reason (the file-level ones are in kpctl/tracefs.py):
- kpctl's probes live in their own group and are enabled in kpctl's own instance
  (instances/kpctl): hits land in that instance's buffer, so the global buffer and
  whatever other tracers do with it are never touched.
- An enabled event cannot be removed (EBUSY): removal disables it in every instance first.
- After a refused write the kernel explains why in error_log (v5.4, commit 8a062902be72),
  with a caret under the offending byte; that message is what the user sees.
"""
from __future__ import annotations

import errno
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from kpctl import KPCTL_GROUP
from kpctl.backends.base import ProbeInfo, ProbeStats
from kpctl.errors import (
    KernelRejectedError,
    KpctlError,
    ProbeBusyError,
    ProbeExistsError,
    UnknownSymbolError,
    VanishedError,
    check_probe_names,
)
from kpctl.model import Probe, check_name, format_probe, format_removal
from kpctl.tracefs import KPCTL_INSTANCE, KprobeState, Tracefs, parse_kprobe_profile, permission_error

if TYPE_CHECKING:
    from kpctl.hits import ProbeNamer
    from kpctl.watch import HitSource


class TracefsBackend:
    """kpctl's probes of one group, through kprobe_events (see the module's docstring).
    instance is the tracefs instance (instances/NAME) they are enabled in."""

    name = "tracefs"
    hits_in_tracefs = True

    def __init__(self, tracefs: Tracefs, group: str = KPCTL_GROUP, instance: str = KPCTL_INSTANCE) -> None:
        check_name(group, "group")
        self.tracefs = tracefs
        self.group = group
        self.instance = instance

    # --- reading -------------------------------------------------------------------

    def _defined(self) -> list[Probe]:
        """The probes of this group, in kprobe_events order."""
        return [p for p in self.tracefs.defined_probes() if p.group == self.group]

    def _event_file(self, event: str, name: str, instance: str | None = None) -> str:
        return f"{self.instance if instance is None else instance}/events/{self.group}/{event}/{name}"

    def _read_event_file(self, event: str, name: str) -> str:
        try:
            return self.tracefs.path(self._event_file(event, name)).read_text().strip()
        except FileNotFoundError:
            return ""  # the instance does not exist yet: nothing is enabled or filtered there
        except OSError as e:
            if e.errno != errno.ENODEV:
                raise
            return ""  # another process removed the event since kprobe_events was read

    def list_probes(self) -> list[ProbeInfo]:
        states = self.tracefs.kprobe_states()
        infos = []
        for probe in self._defined():
            assert probe.event is not None  # the kernel always prints the event's name
            filter_text = self._read_event_file(probe.event, "filter")
            infos.append(ProbeInfo(
                probe=probe,
                # "1", or "1*" when enabled by a trigger or soft mode.
                enabled=self._read_event_file(probe.event, "enable").startswith("1"),
                filter=None if filter_text in ("", "none") else filter_text,
                backend=self.name,
                kprobe_flags=_flags_for(probe, states),
            ))
        return infos

    def stats(self) -> list[ProbeStats]:
        # kprobe_profile and kprobe_events walk the same list of dynamic events, so line i
        # of one is line i of the other; 6.1's profile lacks the group to match on.
        defined = self.tracefs.defined_probes()
        profile = parse_kprobe_profile(self.tracefs.read("kprobe_profile"))
        return [
            ProbeStats(event, hits, misses, self.name)
            for probe, (event, hits, misses) in zip(defined, profile, strict=False)  # a probe may come or go between the reads
            if probe.group == self.group and probe.event == event
        ]

    def probe_namers(self) -> Mapping[str, ProbeNamer]:
        return {}  # each probe is an event of its own, named after it

    def hit_sources(self) -> list[HitSource]:
        return []  # hits are trace events in a tracefs instance

    # --- changing ------------------------------------------------------------------

    def requests(self, probes: Sequence[Probe], *, enable: bool = True, event_filter: str | None = None) -> list[str]:
        return self.requests_for(probes, self.group, self.instance, enable=enable, event_filter=event_filter)

    @staticmethod
    def requests_for(probes: Sequence[Probe], group: str, instance: str = KPCTL_INSTANCE, *, enable: bool = True,
                     event_filter: str | None = None) -> list[str]:
        """The lines add() writes for probes in group, enabled in instance: no kernel needed."""
        lines = [format_probe(p if p.group == group else replace(p, group=group)) for p in probes]
        for probe in probes:
            events = f"{instance}/events/{group}/{probe.event}"
            if event_filter is not None:
                lines.append(f"{events}/filter: {event_filter}")
            if enable:
                lines.append(f"{events}/enable: 1")
        return lines

    def add(self, probes: Sequence[Probe], *, enable: bool = True, event_filter: str | None = None) -> list[ProbeInfo]:
        """Define probes in this group; all of them, or on any error none."""
        # dataclasses.replace() is slow enough to show when adding hundreds of probes.
        probes = [p if p.group == self.group else replace(p, group=self.group) for p in probes]
        names = [p.event for p in probes]
        if any(not n for n in names):
            raise KpctlError("every probe needs an event name")
        taken = {p.event for p in self._defined()}
        for name in names:
            if name in taken:
                raise ProbeExistsError(
                    f"a probe named {name} already exists in group {self.group}",
                    "choose another with --name, or remove it first: kpctl rm " + str(name),
                )
            taken.add(name)
        try:
            self._define(probes)
            if enable or event_filter is not None:
                # Only now: making an instance allocates its buffers and a directory per
                # trace event, which is most of the cost of adding disabled probes.
                self.tracefs.make_instance(self.instance)
            for probe in probes:
                assert probe.event is not None
                if event_filter is not None:
                    self._set_filter(probe.event, event_filter)
                if enable:
                    self.tracefs.write_value(self._event_file(probe.event, "enable"), "1")
        except BaseException:
            wanted = set(names)
            self._undo(p for p in self._defined() if p.event in wanted)
            self.tracefs.remove_idle_instance(self.instance)  # made for a probe that is gone
            raise
        return [ProbeInfo(p, enable, event_filter, self.name) for p in probes]

    def _define(self, probes: Sequence[Probe]) -> None:
        """All lines in one write(2), as fast as a hand-made batch: the kernel runs them
        in order and stops at the first it refuses (trace_parse_run_command()), which is
        the first of ours it does not list afterwards."""
        lines = [format_probe(p) for p in probes]
        try:
            self.tracefs.append_command("kprobe_events", "\n".join(lines))
        except OSError as e:
            if e.errno in (errno.EPERM, errno.EACCES):
                raise permission_error(self.tracefs.path("kprobe_events")) from e
            defined = {p.event for p in self._defined()}
            failed = next((n for n, p in enumerate(probes) if p.event not in defined), 0)
            raise self._rejection(probes[failed], lines[failed], e) from e

    def _rejection(self, probe: Probe, line: str, error: OSError) -> KpctlError:
        """The kernel's own reason for refusing line, from error_log, with hints."""
        entry = next((e for e in reversed(self.tracefs.error_log()) if e.command == line), None)
        target_at = line.index(" ") + 1
        if entry is None:  # some refusals are not logged (6.1: $comm:u32, a bad first letter)
            message, offset = f"{os.strerror(error.errno or errno.EINVAL)} (the kernel logged no reason)", target_at
        else:
            message, offset = entry.message, entry.offset
        text = f"kernel rejected probe {probe.full_name}: {message}"
        symbol = probe.target.symbol
        # kallsyms is only worth reading (100,000 lines) when the kernel blamed the target.
        if symbol is None or offset != target_at:
            return KernelRejectedError(text, line, offset)
        status = self.tracefs.symbols.status(symbol)
        if symbol not in self.tracefs.symbols.by_name:
            return UnknownSymbolError(text, line, offset, f"unknown symbol {symbol}: {status.reason}")
        if not status.probeable:
            return KernelRejectedError(text, line, offset, f"{symbol} is {status.reason}")
        if probe.target.offset and message.startswith("Failed to register"):
            return KernelRejectedError(
                text, line, offset,
                f"{symbol}+{probe.target.offset} may be an ftrace patch site or not an instruction "
                "boundary: try +0 or the start of another instruction",
            )
        return KernelRejectedError(text, line, offset)

    def _set_filter(self, event: str, filter_text: str) -> None:
        path = self._event_file(event, "filter")
        try:
            self.tracefs.write_value(path, filter_text)
        except OSError as e:
            # Reading the filter file back shows the kernel's parse error under the filter.
            detail = self.tracefs.path(path).read_text().strip().splitlines()
            reason = detail[-1].removeprefix("parse_error: ") if detail else os.strerror(e.errno or errno.EINVAL)
            offset = (len(detail[1]) - 1) if len(detail) >= 3 else 0
            raise KernelRejectedError(f"kernel rejected filter: {reason}", filter_text, offset) from e

    def _undo(self, probes: Iterable[Probe]) -> None:
        events = [p.event for p in probes if p.event]
        for event in events:
            self._disable_everywhere(event)
        with self.tracefs.command_writer("kprobe_events") as write:
            for event in events:
                write(format_removal(self.group, event))

    def _check_names(self, names: Sequence[str]) -> None:
        check_probe_names(names, {p.event for p in self._defined() if p.event}, f"group {self.group}")

    def enable(self, names: Sequence[str]) -> None:
        self._check_names(names)
        for name in names:
            self.tracefs.write_value(self._event_file(name, "enable"), "1")

    def disable(self, names: Sequence[str]) -> None:
        """Off in every instance: a watch beside the first reads its own (backend.py)."""
        self._check_names(names)
        for name in names:
            self._disable_everywhere(name)

    def _disable_everywhere(self, event: str) -> None:
        instances = self.tracefs.path("instances")
        roots = [""]
        if instances.is_dir():
            roots += [f"instances/{d.name}/" for d in instances.iterdir()]
        for root in roots:
            enable = f"{root}events/{self.group}/{event}/enable"
            try:
                enabled = self.tracefs.path(enable).read_text().startswith("1")
            except FileNotFoundError:
                continue
            if enabled:
                try:
                    self.tracefs.write_value(enable, "0")
                except VanishedError:
                    continue  # removed meanwhile: off for good

    def remove(self, names: Sequence[str]) -> None:
        self._check_names(names)
        for name in names:
            self._disable_everywhere(name)
        with self.tracefs.command_writer("kprobe_events") as write:
            for name in names:
                try:
                    write(format_removal(self.group, name))
                except OSError as e:
                    if e.errno == errno.EBUSY:
                        raise ProbeBusyError(
                            f"probe {name} is in use and cannot be removed",
                            "something besides tracefs uses the event (perf, BPF): stop it first",
                        ) from e
                    raise
        self.tracefs.remove_idle_instance(self.instance)

    def remove_all(self) -> list[str]:
        names = [p.event for p in self._defined() if p.event]
        if names:
            self.remove(names)
        else:
            self.tracefs.remove_idle_instance(self.instance)
        return names

    def record_into(self, instance: str) -> None:
        """Turn on in another instance (instances/NAME) the events this group has on in
        its own, with their filters."""
        for info in self.list_probes():
            if info.enabled:
                if info.filter:
                    self.tracefs.write_value(self._event_file(info.name, "filter", instance), info.filter)
                self.tracefs.write_value(self._event_file(info.name, "enable", instance), "1")


def _flags_for(probe: Probe, states: Sequence[KprobeState]) -> tuple[str, ...]:
    """The debug/kprobes/list flags of probe's kprobe."""
    if probe.target.symbol is None:
        return ()
    return next((state.flags for state in states if state.holds(probe)), ())
