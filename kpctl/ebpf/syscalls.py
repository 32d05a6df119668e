"""bpf(2) and perf_event_open(2) through ctypes: maps, program loads with the
verifier's log, and kprobes through the perf kprobe PMU (v4.17, commit e12f03d7031a
"perf/core: Implement the 'perf_kprobe' PMU"), which belong to the file descriptor
that made them: they go when the process exits, SIGKILL included.

Attributes are built with struct at the offsets of include/uapi/linux/bpf.h and
perf_event.h; the kernel takes a longer or shorter attribute as long as what it does
not know is zero.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import functools
import os
import resource
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path

from kpctl.errors import KpctlError

_SYSCALLS = {"x86_64": (321, 298), "aarch64": (280, 241)}  # (bpf, perf_event_open)
KPROBE_PMU = Path("/sys/bus/event_source/devices/kprobe")

# bpf(2) commands, map and program types, attach types.
# (bpf(2)'s commands are private: asm.py's helper numbers bear the same names.)
_MAP_CREATE, _MAP_LOOKUP_ELEM, _MAP_GET_NEXT_KEY, _PROG_LOAD, _LINK_CREATE = 0, 1, 4, 5, 28
HASH, ARRAY, STACK_TRACE = 1, 2, 7
PROG_TYPE_KPROBE = 2
ATTACH_PERF_EVENT, ATTACH_KPROBE_MULTI = 41, 42
KPROBE_MULTI_RETURN = 1

_PERF_FLAG_FD_CLOEXEC = 8
_PERF_EVENT_IOC_ENABLE = 0x2400
_ATTR_SIZE = 128  # PERF_ATTR_SIZE_VER7; 6.1 knows 136 bytes
_LOG_SIZE = 4 << 20

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class BpfError(KpctlError):
    """A bpf(2) or perf_event_open(2) call the kernel refused; errno kept for callers
    that try another way."""

    def __init__(self, message: str, errno_: int | None, hint: str | None = None, details: str | None = None) -> None:
        super().__init__(message, hint, details)
        self.errno = errno_


def supported_machine() -> bool:
    return os.uname().machine in _SYSCALLS


def _syscall(index: int, *args: object) -> int:
    number = _SYSCALLS[os.uname().machine][index]
    result = _libc.syscall(ctypes.c_long(number), *args)
    if result < 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return int(result)


def _bpf(command: int, attr: bytes) -> int:
    buffer = ctypes.create_string_buffer(attr, 128)
    return _syscall(0, ctypes.c_int(command), buffer, ctypes.c_uint(128))


def _address(buffer: ctypes.Array[ctypes.c_char] | None) -> int:
    return ctypes.addressof(buffer) if buffer is not None else 0


def _object_name(name: str) -> bytes:
    return name.encode()[:15].ljust(16, b"\0")  # BPF_OBJ_NAME_LEN, NUL included


class Map:
    """A BPF map of fixed-size keys and values, closed with close()."""

    def __init__(self, kind: int, key_size: int, value_size: int, max_entries: int, name: str) -> None:
        self.key_size, self.value_size = key_size, value_size
        attr = struct.pack("<IIIIIII16s", kind, key_size, value_size, max_entries, 0, 0, 0, _object_name(name))
        try:
            self.fd = _bpf(_MAP_CREATE, attr)
        except OSError as e:
            raise BpfError(f"the kernel refused a BPF map ({name}): {e.strerror}", e.errno, _privilege_hint(e.errno)) from None

    def _call(self, command: int, key: ctypes.Array[ctypes.c_char] | None,
              value: ctypes.Array[ctypes.c_char] | None, flags: int = 0) -> None:
        _bpf(command, struct.pack("<IIQQQ", self.fd, 0, _address(key), _address(value), flags))

    def lookup(self, key: bytes) -> bytes | None:
        value = ctypes.create_string_buffer(self.value_size)
        try:
            self._call(_MAP_LOOKUP_ELEM, ctypes.create_string_buffer(key, self.key_size), value)
        except OSError as e:
            if e.errno == errno.ENOENT:
                return None
            raise
        return value.raw

    def keys(self) -> Iterator[bytes]:
        """Every key, read as the kernel walks the map (a key deleted meanwhile may
        restart the walk: fine for counts that are only added to)."""
        key: ctypes.Array[ctypes.c_char] | None = None
        while True:
            following = ctypes.create_string_buffer(self.key_size)
            try:
                self._call(_MAP_GET_NEXT_KEY, key, following)
            except OSError as e:
                if e.errno == errno.ENOENT:
                    return
                raise
            key = following
            yield following.raw

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        for key in self.keys():
            value = self.lookup(key)
            if value is not None:
                yield key, value

    def close(self) -> None:
        os.close(self.fd)


def _privilege_hint(code: int | None) -> str | None:
    return "run it as root (CAP_BPF and CAP_PERFMON)" if code in (errno.EPERM, errno.EACCES) else None


def verifier_summary(log: str) -> str:
    """The line of the verifier's log that says why: its last, less the statistics."""
    lines = [line for line in log.splitlines() if line.strip()
             and not line.startswith(("processed ", "verification time", "stack depth"))]
    return lines[-1] if lines else "no log"


def load_program(code: bytes, name: str, expected_attach_type: int = 0) -> int:
    """A kprobe program's file descriptor. Refused: a BpfError whose message has the
    verifier's reason and whose hint is the whole log (shown with -v)."""
    insns = ctypes.create_string_buffer(code, len(code))
    license = ctypes.create_string_buffer(b"GPL")  # bpf_probe_read_kernel, get_stackid: GPL only

    def attempt(log: ctypes.Array[ctypes.c_char] | None) -> int:
        attr = struct.pack("<IIQQIIQII16sII", PROG_TYPE_KPROBE, len(code) // 8, _address(insns), _address(license),
                           1 if log is not None else 0, len(log) if log is not None else 0, _address(log),
                           0, 0, _object_name(name), 0, expected_attach_type)
        return _bpf(_PROG_LOAD, attr)

    try:
        return attempt(None)
    except OSError as e:
        if e.errno in (errno.EPERM, errno.EACCES) and os.geteuid() != 0:
            raise BpfError(f"the kernel refused to load a BPF program: {e.strerror}", e.errno, _privilege_hint(e.errno)) from None
    log = ctypes.create_string_buffer(_LOG_SIZE)
    try:  # again, with the log: only a refusal pays for it
        return attempt(log)
    except OSError as e:
        text = log.value.decode(errors="replace")
        raise BpfError(f"the verifier refused kpctl's BPF program {name}: {verifier_summary(text) if text else e.strerror}",
                       e.errno, "kpctl -v shows the verifier's log" if text else None, text or None) from None


def _pmu_retprobe_bit() -> int:
    """The config bit that asks the kprobe PMU for a return probe (format/retprobe: "config:0")."""
    return int((KPROBE_PMU / "format" / "retprobe").read_text().strip().split(":")[1])


@functools.cache
def kprobe_pmu_type() -> int | None:
    try:
        return int((KPROBE_PMU / "type").read_text())
    except (OSError, ValueError):
        return None


def allow_descriptors(how_many: int) -> None:
    """Room for how_many more file descriptors: a link per function, 1,000 for a glob,
    past the usual soft limit of 1,024. Raised up to the hard limit, as bcc does."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = len(os.listdir("/proc/self/fd")) + how_many + 16
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted if hard == resource.RLIM_INFINITY else min(wanted, hard), hard))


def open_kprobe(function: str, is_return: bool) -> int:
    """A perf event of a kprobe (or kretprobe) on function, disabled: its fd."""
    pmu = kprobe_pmu_type()
    if pmu is None:
        raise BpfError("this kernel has no kprobe PMU (/sys/bus/event_source/devices/kprobe)", errno.ENOENT)
    symbol = ctypes.create_string_buffer(function.encode())
    config = 1 << _pmu_retprobe_bit() if is_return else 0
    # type, size, config, sample_period, sample_type, read_format, flags (bit 0: disabled),
    # wakeup_events, bp_type, config1 (kprobe_func), config2 (probe_offset)
    attr = struct.pack("<IIQQQQQIIQQ", pmu, _ATTR_SIZE, config, 1, 0, 0, 1, 1, 0, _address(symbol), 0)
    buffer = ctypes.create_string_buffer(attr, _ATTR_SIZE)
    try:
        return _syscall(1, buffer, ctypes.c_int(-1), ctypes.c_int(0), ctypes.c_int(-1),
                        ctypes.c_ulong(_PERF_FLAG_FD_CLOEXEC))
    except OSError as e:
        kind = "kretprobe" if is_return else "kprobe"
        hint = ("kallsyms has this name more than once (a function or data), and the kernel takes a unique one"
                if e.errno == errno.EADDRNOTAVAIL else _privilege_hint(e.errno))
        raise BpfError(f"the kernel refused a {kind} on {function}: {e.strerror}", e.errno, hint) from None


def attach_perf_event(program: int, event: int, cookie: int) -> int:
    """A link of program to a perf event with a cookie the program reads
    (bpf_get_attach_cookie(): v5.15, commit 82e6b1eee6a8 "bpf: Allow to specify
    user-provided bpf_cookie for BPF perf links"); the event enabled, and its fd closed
    whatever happens: the link holds the event. The link's fd."""
    try:
        link = _bpf(_LINK_CREATE, struct.pack("<IIIIQ", program, event, ATTACH_PERF_EVENT, 0, cookie))
        fcntl.ioctl(event, _PERF_EVENT_IOC_ENABLE, 0)
    except OSError as e:
        raise BpfError(f"the kernel refused to attach a BPF program: {e.strerror}", e.errno) from None
    finally:
        os.close(event)
    return link


def attach_kprobe_multi(program: int, functions: Sequence[str], is_return: bool) -> int:
    """One link of program to every function (fprobe; v5.18, commit 0dcac2725406 "bpf:
    Add multi kprobe link"), the cookie of each its index. The link's fd; a BpfError
    where the kernel has none (EOPNOTSUPP without CONFIG_FPROBE)."""
    names = [ctypes.create_string_buffer(f.encode()) for f in functions]
    symbols = (ctypes.c_uint64 * len(names))(*(ctypes.addressof(n) for n in names))
    cookies = (ctypes.c_uint64 * len(names))(*range(len(names)))
    attr = struct.pack("<IIIIIIQQQ", program, 0, ATTACH_KPROBE_MULTI, 0, KPROBE_MULTI_RETURN if is_return else 0,
                       len(names), ctypes.addressof(symbols), 0, ctypes.addressof(cookies))
    try:
        return _bpf(_LINK_CREATE, attr)
    except OSError as e:
        raise BpfError(f"the kernel refused a kprobe_multi link: {e.strerror}", e.errno) from None
