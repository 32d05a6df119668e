"""The tracefs backend: kprobes through kprobe_events, hits through a tracefs instance.

Rules this module keeps, each for a reason:
- kprobe_events is only ever appended to, one command per write(2): opening it with
  O_TRUNC deletes every probe on the system, other tools' too (trace_kprobe.c,
  probes_open()), and the kernel parses a write line by line, so one command per write
  tells exactly which line it refused. Python's open(path, "a") seeks to the end, which
  tracefs refuses with EINVAL (measured on 6.1): os.open with O_APPEND does not.
- kpctl's probes live in their own group and are enabled in kpctl's own instance
  (instances/kpctl): hits land in that instance's buffer, so the global buffer and
  whatever other tracers do with it are never touched.
- An enabled event cannot be removed (EBUSY): removal disables it in every instance first.
- After a refused write the kernel explains why in error_log (v5.4, commit 8a062902be72),
  with a caret under the offending byte; that message is what the user sees.
"""
from __future__ import annotations

import errno
import fcntl
import io
import os
import re
import signal
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from kpctl.backend import ProbeInfo, ProbeStats
from kpctl.errors import (
    KernelRejectedError,
    KpctlError,
    PermissionDeniedError,
    ProbeBusyError,
    ProbeExistsError,
    ProbeSyntaxError,
    TracefsError,
    UnknownSymbolError,
    check_probe_names,
)
from kpctl.features import detect_features
from kpctl.model import Probe, format_probe, format_removal, is_valid_name, parse_probe

if TYPE_CHECKING:
    from kpctl.symbols import KernelSymbols

TRACEFS_MOUNTS = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))
DEBUGFS = Path("/sys/kernel/debug")
DEFAULT_GROUP = "kpctl"
DEFAULT_INSTANCE = "kpctl"
# Files whose truncation destroys state that is not kpctl's.
_NEVER_TRUNCATE = frozenset({"kprobe_events", "dynamic_events", "uprobe_events"})

_ERROR_LOG_ENTRY = re.compile(
    r"^\[\s*(?P<time>[\d.]+)\] (?P<source>[\w-]+): error: (?P<message>.*)\n"
    r"  Command: (?P<command>.*)\n(?P<caret> *)\^$",
    re.M,
)
_CARET_INDENT = len("  Command: ")
_ENDBR64_SIZE = 4
_KPROBE_LIST_LINE = re.compile(
    r"^(?P<address>[0-9a-f]+)\s+(?P<kind>[kr])\s+(?P<where>\S+)\s*(?P<module>[\w-]+)?\s*(?P<flags>(?:\[\w+\])*)\s*$"
)


def needs_root_hint() -> str | None:
    return "run kpctl as root, for example with sudo" if os.geteuid() != 0 else None


def _permission_error(path: Path) -> PermissionDeniedError:
    if os.geteuid() != 0:
        return PermissionDeniedError(f"permission denied: {path} needs root", needs_root_hint())
    lockdown = read_lockdown()
    if lockdown and lockdown != "none":
        return PermissionDeniedError(
            f"permission denied: {path}: the kernel is locked down ({lockdown})",
            "kernel lockdown forbids kprobes: boot with lockdown=none or without Secure Boot",
        )
    return PermissionDeniedError(f"permission denied: {path}")


def read_lockdown(path: Path = Path("/sys/kernel/security/lockdown")) -> str | None:
    """The active lockdown level ("none", "integrity", "confidentiality"); None if unknown."""
    try:
        match = re.search(r"\[(\w+)\]", path.read_text())
    except OSError:
        return None
    return match.group(1) if match else None


def find_tracefs(mount: bool = True) -> Path:
    """Where tracefs is mounted; mount it at /sys/kernel/tracing if it is nowhere."""
    for root in TRACEFS_MOUNTS:
        try:
            if (root / "README").exists():
                return root
        except PermissionError as e:
            raise _permission_error(root) from e
    if mount and os.geteuid() == 0 and TRACEFS_MOUNTS[0].is_dir():
        import subprocess  # only here: it is a noticeable part of kpctl's start-up

        done = subprocess.run(
            ["mount", "-t", "tracefs", "nodev", str(TRACEFS_MOUNTS[0])], capture_output=True, text=True
        )
        if done.returncode == 0 and (TRACEFS_MOUNTS[0] / "README").exists():
            return TRACEFS_MOUNTS[0]
    if os.geteuid() != 0 and TRACEFS_MOUNTS[0].is_dir():
        raise PermissionDeniedError("tracefs is not readable: kpctl needs root", needs_root_hint())
    raise TracefsError(
        "tracefs is not mounted",
        "mount it: sudo mount -t tracefs nodev /sys/kernel/tracing (the kernel needs CONFIG_FTRACE)",
    )


@dataclass(frozen=True)
class ErrorLogEntry:
    source: str  # trace_kprobe, trace_probe, ...
    message: str
    command: str
    offset: int  # byte offset into command


def parse_error_log(text: str) -> list[ErrorLogEntry]:
    """error_log entries, oldest first. The caret line's column, less the indent of
    ``  Command: ``, is the byte offset the kernel blamed (tracing_err_log_show_pos())."""
    return [
        ErrorLogEntry(m["source"], m["message"], m["command"], max(len(m["caret"]) - _CARET_INDENT, 0))
        for m in _ERROR_LOG_ENTRY.finditer(text)
    ]


@dataclass(frozen=True)
class KprobeState:
    """One line of debug/kprobes/list: ``ADDR  k|r  SYM+OFF  [MOD] [FLAGS]``."""
    address: int
    is_return: bool
    where: str
    module: str | None
    flags: tuple[str, ...]


def parse_kprobe_list(text: str) -> list[KprobeState]:
    states = []
    for line in text.splitlines():
        m = _KPROBE_LIST_LINE.match(line)
        if m:
            states.append(KprobeState(
                int(m["address"], 16), m["kind"] == "r", m["where"], m["module"],
                tuple(re.findall(r"\[(\w+)\]", m["flags"])),
            ))
    return states


def parse_kprobe_profile(text: str) -> list[tuple[str, int, int]]:
    """(event, hits, misses) per line of kprobe_profile, in kprobe_events order.
    6.1 prints the bare event name, later kernels may print GROUP/EVENT."""
    rows = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 3:
            rows.append((fields[0].rsplit("/", 1)[-1], int(fields[1]), int(fields[2])))
    return rows


class Tracefs:
    """The files of one tracefs mount, and the only code that writes them."""

    def __init__(self, root: Path, debugfs: Path = DEBUGFS, proc: Path = Path("/proc")) -> None:
        self.root = root
        self.debugfs = debugfs
        self.proc = proc

    def path(self, relative: str) -> Path:
        return self.root / relative

    def read(self, relative: str) -> str:
        try:
            return self.path(relative).read_text(errors="replace")
        except PermissionError as e:
            raise _permission_error(self.path(relative)) from e
        except FileNotFoundError as e:
            raise TracefsError(f"{self.path(relative)} does not exist", _missing_file_hint(relative)) from e

    @contextmanager
    def command_writer(self, relative: str) -> Iterator[Callable[[str], None]]:
        """A function that appends commands, one write(2) per call, to a *_events file
        open for the block: the only way kpctl writes those files."""
        path = self.path(relative)
        try:
            file = open_file(path, os.O_WRONLY | os.O_APPEND)
        except PermissionError as e:
            raise _permission_error(path) from e
        except FileNotFoundError as e:
            raise TracefsError(f"{path} does not exist", _missing_file_hint(relative)) from e
        with file:
            yield lambda command: _write_all(file.fileno(), command.encode() + b"\n")

    def append_command(self, relative: str, command: str) -> None:
        with self.command_writer(relative) as write:
            write(command)

    def write_value(self, relative: str, value: str) -> None:
        """Replace a control file's value (enable, filter, trace)."""
        assert Path(relative).name not in _NEVER_TRUNCATE, "probe definitions are only appended to"
        path = self.path(relative)
        try:
            file = open_file(path, os.O_WRONLY | os.O_TRUNC)
        except PermissionError as e:
            raise _permission_error(path) from e
        with file:
            os.write(file.fileno(), value.encode() + b"\n")

    @contextmanager
    def changing(self) -> Iterator[None]:
        """Hold kpctl's lock on this tracefs (a flock on its root directory, which nothing
        else takes) while the caller changes probes, enable states and instances: one
        kpctl's rm must not run between another's reading which events are on and its
        turning them on in a watch's instance, or the removal meets an enabled event
        (EBUSY) and a disabled probe records again. Released when the process ends."""
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def make_instance(self, relative: str) -> None:
        path = self.path(relative)
        try:
            path.mkdir(exist_ok=True)
        except PermissionError as e:
            raise _permission_error(path) from e
        except FileNotFoundError as e:
            raise TracefsError("this kernel's tracefs has no instances directory") from e

    def remove_instance(self, relative: str) -> None:
        """rmdir an instance: tracefs removes its files, buffers and event settings with it."""
        try:
            self.path(relative).rmdir()
        except FileNotFoundError:
            pass
        except OSError as e:
            if e.errno != errno.EBUSY:  # a watch still reads it: a later removal takes it
                raise

    def remove_idle_instance(self, relative: str) -> None:
        """rmdir an instance once removing it loses nothing: every event there is off (its
        events/enable reads 0; X when some are on) and no probe's event has a filter there.
        So another group's or the module's probes keep recording, and a disabled probe
        keeps its filter."""
        try:
            state = self.path(f"{relative}/events/enable").read_text().strip()
        except FileNotFoundError:
            return
        if state != "0":
            return
        for probe in self.defined_probes():
            try:
                if self.path(f"{relative}/events/{probe.group}/{probe.event}/filter").read_text().strip() != "none":
                    return
            except FileNotFoundError:
                continue
        self.remove_instance(relative)

    def defined_probes(self) -> list[Probe]:
        """Every group's probes, in kprobe_events order."""
        return [parse_probe(line) for line in self.read("kprobe_events").splitlines() if line.strip()]

    @cached_property
    def readme(self) -> str:
        return self.read("README")

    @cached_property
    def features(self) -> dict[str, bool]:
        return detect_features(self.readme)

    @cached_property
    def symbols(self) -> KernelSymbols:
        # Imported here: only funcs and refused probes need symbols, and `kpctl list` must start fast.
        from kpctl.symbols import KernelSymbols

        return KernelSymbols(
            self.proc / "kallsyms",
            self.debugfs / "kprobes" / "blacklist",
            self.path("available_filter_functions"),
        )

    def error_log(self) -> list[ErrorLogEntry]:
        try:
            return parse_error_log(self.path("error_log").read_text(errors="replace"))
        except OSError:
            return []  # before v5.4 there is no error_log

    def kprobe_states(self) -> list[KprobeState]:
        try:
            return parse_kprobe_list((self.debugfs / "kprobes" / "list").read_text(errors="replace"))
        except OSError:
            return []  # debugfs not mounted: the state column stays empty


def open_file(path: Path, flags: int) -> io.FileIO:
    """os.open(path, flags) as a file object, which closes its descriptor when dropped.
    Ctrl-C and SIGTERM wait until it exists: a Python handler run just as os.open()
    returns would lose a bare descriptor, and one left open in a tracefs instance makes
    removing the instance fail with EBUSY (instance_rmdir()) until the process exits."""
    mode = "r" if flags & os.O_ACCMODE == os.O_RDONLY else "w"
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        return io.FileIO(os.open(path, flags), mode)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def _write_all(fd: int, data: bytes) -> None:
    # tracefs consumes a whole command per write(2); a short count would split it.
    written = os.write(fd, data)
    if written != len(data):
        raise OSError(errno.EIO, f"short write to tracefs ({written} of {len(data)} bytes)")


def _missing_file_hint(relative: str) -> str | None:
    if relative.endswith("kprobe_events"):
        return "this kernel has no kprobe events (CONFIG_KPROBE_EVENTS=y is needed)"
    return None


class TracefsBackend:
    """kpctl's probes of one group, through kprobe_events (see the module's docstring)."""

    name = "tracefs"

    def __init__(self, tracefs: Tracefs, group: str = DEFAULT_GROUP, instance: str = DEFAULT_INSTANCE) -> None:
        if not is_valid_name(group):
            raise KpctlError(f"invalid group name {group!r}", "a group name follows the rules of C identifiers")
        self.tracefs = tracefs
        self.group = group
        self.instance = f"instances/{instance}"

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

    def hit_pipe(self, clear: bool = True) -> Path:
        self.tracefs.make_instance(self.instance)
        if clear:  # truncating our instance's trace empties only its buffer
            self.tracefs.write_value(f"{self.instance}/trace", "")
        return self.tracefs.path(f"{self.instance}/trace_pipe")

    # --- changing ------------------------------------------------------------------

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
                raise _permission_error(self.tracefs.path("kprobe_events")) from e
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
            raise ProbeSyntaxError(f"kernel rejected filter: {reason}", filter_text, offset) from e

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
                self.tracefs.write_value(enable, "0")

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
        """Turn on in another instance the events this group has on in its own, with
        their filters."""
        for info in self.list_probes():
            if info.enabled:
                if info.filter:
                    self.tracefs.write_value(self._event_file(info.name, "filter", instance), info.filter)
                self.tracefs.write_value(self._event_file(info.name, "enable", instance), "1")


def _flags_for(probe: Probe, states: Sequence[KprobeState]) -> tuple[str, ...]:
    """The debug/kprobes/list flags of probe's kprobe. A probe at +0 may sit a few bytes
    further: x86 kernels with IBT step over the ENDBR64 (arch_adjust_kprobe_addr(), v5.18)
    and list it at +0x4."""
    target = probe.target
    if target.symbol is None:
        return ()
    for state in states:
        symbol, _, offset = state.where.partition("+")
        if symbol != target.symbol or state.is_return != probe.is_return:
            continue
        at = int(offset, 16) if offset else 0
        if at == target.offset or (target.offset == 0 and at <= _ENDBR64_SIZE):
            return state.flags
    return ()
