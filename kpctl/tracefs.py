"""tracefs's files: finding the mount, reading and writing its files, parsing what the
kernel prints there. The tracefs backend (kpctl/backends/tracefs.py) is built on it.

Rules this module keeps, each for a reason:
- kprobe_events is only ever appended to, one command per write(2): opening it with
  O_TRUNC deletes every probe on the system, other tools' too (trace_kprobe.c,
  probes_open()), and the kernel parses a write line by line, so one command per write
  tells exactly which line it refused. Python's open(path, "a") seeks to the end, which
  tracefs refuses with EINVAL (measured on 6.1): os.open with O_APPEND does not.
"""
from __future__ import annotations

import errno
import fcntl
import io
import os
import re
import signal
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from kpctl.errors import PermissionDeniedError, TracefsError, VanishedError
from kpctl.features import detect_features
from kpctl.model import Probe, parse_probe

if TYPE_CHECKING:
    from kpctl.symbols import KernelSymbols

TRACEFS_MOUNTS = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))
DEBUGFS = Path("/sys/kernel/debug")
# kpctl's own instance (instances/kpctl): where its probes are enabled and their hits wait.
KPCTL_INSTANCE = "instances/kpctl"
# Files whose truncation destroys state that is not kpctl's.
_ENDBR64_SIZE = 4
_NEVER_TRUNCATE = frozenset({"kprobe_events", "dynamic_events", "uprobe_events"})

_ERROR_LOG_ENTRY = re.compile(
    r"^\[\s*(?P<time>[\d.]+)\] (?P<source>[\w-]+): error: (?P<message>.*)\n"
    r"  Command: (?P<command>.*)\n(?P<caret> *)\^$",
    re.M,
)
_CARET_INDENT = len("  Command: ")
_KPROBE_LIST_LINE = re.compile(
    r"^(?P<address>[0-9a-f]+)\s+(?P<kind>[kr])\s+(?P<where>\S+)\s*(?P<module>[\w-]+)?\s*(?P<flags>(?:\[\w+\])*)\s*$"
)


def needs_root_hint() -> str | None:
    return "run kpctl as root, for example with sudo" if os.geteuid() != 0 else None


def permission_error(path: Path) -> PermissionDeniedError:
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


def find_tracefs(mount: bool = True, say: Callable[[str], None] | None = None) -> Path:
    """Where tracefs is mounted; mount it at /sys/kernel/tracing if it is nowhere (as
    root), and then tell say(): the mount stays, for the next command and other tools."""
    for root in TRACEFS_MOUNTS:
        try:
            if (root / "README").exists():
                return root
        except PermissionError as e:
            raise permission_error(root) from e
    if mount and os.geteuid() == 0 and TRACEFS_MOUNTS[0].is_dir():
        import subprocess  # only here: it is a noticeable part of kpctl's start-up

        done = subprocess.run(
            ["mount", "-t", "tracefs", "nodev", str(TRACEFS_MOUNTS[0])], check=False, capture_output=True, text=True
        )
        if done.returncode == 0 and (TRACEFS_MOUNTS[0] / "README").exists():
            if say is not None:
                say(f"kpctl: mounted tracefs at {TRACEFS_MOUNTS[0]} (it stays mounted)")
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

    def holds(self, probe: Probe) -> bool:
        """Whether this kprobe is probe's. A probe at +0 may sit a few bytes further: x86
        kernels with IBT step over the ENDBR64 (arch_adjust_kprobe_addr(), v5.18: "x86/ibt,
        kprobes: Cure sym+0 equals fentry woes") and list it at +0x4."""
        if probe.is_return != self.is_return:
            return False
        if probe.target.address is not None:
            return probe.target.address == self.address
        symbol, _, offset = self.where.partition("+")
        at = int(offset, 16) if offset else 0
        return symbol == probe.target.symbol and (
            at == probe.target.offset or (probe.target.offset == 0 and at <= _ENDBR64_SIZE))


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
            raise permission_error(self.path(relative)) from e
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
            raise permission_error(path) from e
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
            with file:
                os.write(file.fileno(), value.encode() + b"\n")
        except PermissionError as e:
            raise permission_error(path) from e
        except OSError as e:
            # An event another process removed between our write to kprobe_events and
            # this one: its directory is gone (ENOENT), or going (ENODEV).
            if e.errno not in (errno.ENOENT, errno.ENODEV):
                raise
            raise VanishedError(f"{relative} is gone: another process removed it meanwhile",
                                "run the command again") from None

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
            raise permission_error(path) from e
        except FileNotFoundError as e:
            raise TracefsError("this kernel's tracefs has no instances directory") from e

    def remove_instance(self, relative: str) -> bool:
        """rmdir an instance: tracefs removes its files, buffers and event settings with
        it. False when it is busy and stays: a reader has it open (a watch: a later
        removal takes it), or a hist trigger with variables holds it."""
        try:
            self.path(relative).rmdir()
        except FileNotFoundError:
            pass
        except OSError as e:
            if e.errno != errno.EBUSY:
                raise
            return False
        return True

    def remove_triggers(self, relative: str, groups: Sequence[str]) -> None:
        """Remove every trigger of the events of groups in an instance, those with actions
        (onmatch) first, which hold the others' variables and synthetic events, as the
        kernel's ftrace selftests do (test.d/functions, reset_trigger_file())."""
        files = sorted(f for group in groups for f in self.path(relative).glob(f"events/{group}/*/trigger"))
        triggers = [(f, line.split(" [", 1)[0].strip()) for f in files
                    for line in f.read_text(errors="replace").splitlines() if line and not line.startswith("#")]
        for file, line in sorted(triggers, key=lambda t: ":on" not in t[1]):
            self.append_command(str(file.relative_to(self.root)), f"!{line}")

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

        # The running kernel's configuration: /proc/config.gz (CONFIG_IKCONFIG_PROC), or
        # Debian's and most distributions' /boot/config-RELEASE when this is the real /proc.
        configs = [self.proc / "config.gz"]
        if self.proc == Path("/proc"):
            configs.append(Path("/boot") / f"config-{os.uname().release}")
        return KernelSymbols(
            self.proc / "kallsyms",
            self.debugfs / "kprobes" / "blacklist",
            self.path("available_filter_functions"),
            self.path("kprobe_events"),
            configs,
        )

    def loaded_modules(self) -> frozenset[str] | None:
        """Names of the loaded modules (/proc/modules); None when it cannot be read."""
        try:
            return frozenset(line.split(" ", 1)[0] for line in (self.proc / "modules").read_text().splitlines())
        except FileNotFoundError:
            return frozenset()  # a kernel without CONFIG_MODULES: none is loaded, none can be
        except OSError:
            return None

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
