"""Fixtures for tests that need a real kernel with kprobes, and root.

On a machine without them every such test skips with the reason. The guest harness sets
KPCTL_REQUIRE_KERNEL=1, which turns each of those skips into a failure: in a guest a
missing feature is a broken harness or a broken kpctl, never a reason to pass.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from kpctl.tracefs import Tracefs

REQUIRED = os.environ.get("KPCTL_REQUIRE_KERNEL") == "1"


def require(condition: bool, reason: str) -> None:
    """Skip the calling test unless condition holds; fail instead when required."""
    if condition:
        return
    if REQUIRED:
        pytest.fail(f"required kernel feature missing: {reason}", pytrace=False)
    pytest.skip(reason)


def emptied_pipe(tracefs: Tracefs, instance: str) -> Path:
    """instance's trace_pipe, its buffer emptied (the instance made if need be)."""
    tracefs.make_instance(instance)
    tracefs.write_value(f"{instance}/trace", "")
    return tracefs.path(f"{instance}/trace_pipe")


def kallsyms_text() -> list[tuple[int, str]]:
    """Text symbols of the kernel and its modules, by address."""
    rows = (line.split() for line in Path("/proc/kallsyms").read_text().splitlines())
    return sorted((int(f[0], 16), f[2]) for f in rows if f[1] in "tT")


def notrace_candidates() -> list[str]:
    """Functions ftrace may not trace that kprobes might take: text symbols with one
    name, not in available_filter_functions, not on the kprobe blacklist."""
    traceable = {line.split()[0] for line in Path("/sys/kernel/tracing/available_filter_functions").read_text().splitlines()}
    blacklist = {line.split()[-1] for line in Path("/sys/kernel/debug/kprobes/blacklist").read_text().splitlines()}
    names = [name for _, name in kallsyms_text()]
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    once = {name for name, count in counts.items() if count == 1}
    return sorted(n for n in once - traceable - blacklist if n.isidentifier() and not n.startswith("__pfx_"))


def tracefs_refuses_as_notrace(name: str) -> bool:
    """Whether kprobe_events refuses a probe on name as notrace (within_notrace_func())."""
    fd = os.open("/sys/kernel/tracing/kprobe_events", os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, f"p:kt_notrace/probe {name}".encode())
    except OSError:
        return f"Could not probe notrace function {name}" in subprocess.run(
            ["dmesg"], stdout=subprocess.PIPE, text=True, check=True).stdout.splitlines()[-1]
    else:
        os.write(fd, b"-:kt_notrace/probe")
        return False
    finally:
        os.close(fd)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/kernel" in str(item.path):
            item.add_marker(pytest.mark.kernel)
    # A probe the kernel keeps for good pins kpctl_kmod, and lockdown cannot be lifted:
    # such tests run after every other test of the session, in that order.
    items.sort(key=lambda item: (item.get_closest_marker("locks_down_the_kernel") is not None,
                                 item.get_closest_marker("leaves_stuck_probes") is not None))
