"""perf_event_open(2) for the kernel tests: how perf, bcc and bpftrace reach trace events
and kprobes, beside kpctl's own."""
from __future__ import annotations

import ctypes
import os
from pathlib import Path

_PERF_EVENT_OPEN = {"x86_64": 298, "aarch64": 241}
PERF_TYPE_TRACEPOINT = 2
ATTR_SIZE = 128


def perf_event_open(type_: int, config: int = 0, config1: int = 0, config2: int = 0) -> int:
    """An event of this process on any CPU, enabled; its file descriptor."""
    attr = (ctypes.c_uint64 * (ATTR_SIZE // 8))()  # a zeroed struct perf_event_attr
    attr[0] = type_ | (ATTR_SIZE << 32)
    attr[1], attr[7], attr[8] = config, config1, config2
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.syscall(_PERF_EVENT_OPEN[os.uname().machine], ctypes.byref(attr), 0, -1, -1, 0)
    assert fd >= 0, os.strerror(ctypes.get_errno())
    return int(fd)


def perf_tracepoint(event_id: int) -> int:
    """A trace event in use by perf: the kernel then refuses to remove it (EBUSY)."""
    return perf_event_open(PERF_TYPE_TRACEPOINT, config=event_id)


def perf_kprobe(symbol: str) -> int:
    """A kprobe through the kprobe PMU, as perf, bcc and bpftrace attach one: it has no
    post_handler, is armed as the event opens, and never shows in kprobe_events."""
    pmu = int(Path("/sys/bus/event_source/devices/kprobe/type").read_text())
    name = ctypes.create_string_buffer(symbol.encode())
    return perf_event_open(pmu, config1=ctypes.addressof(name))  # config1: kprobe_func
