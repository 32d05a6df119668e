"""`kpctl doctor`: what works on this machine, and the fix for what does not."""
from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kpctl.counting import ENGINE_TYPES
from kpctl.errors import KpctlError
from kpctl.features import FEATURES, detect_features
from kpctl.kmod import modules_supported
from kpctl.registry import BACKEND_TYPES, DEFAULT_BACKEND, tracefs_instead
from kpctl.tracefs import DEBUGFS, Tracefs, find_tracefs, read_lockdown

KALLSYMS = Path("/proc/kallsyms")
KPROBE_PMU = Path("/sys/bus/event_source/devices/kprobe")


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True  # False: an optional kernel feature


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def run_checks(say: Callable[[str], None] | None = None) -> list[Check]:
    """Every check; tracefs is mounted when it is not, as by every other command, and
    say() is told so."""
    checks = [
        Check("root", os.geteuid() == 0, f"euid {os.geteuid()}", "run kpctl with sudo"),
    ]
    try:
        tracefs = find_tracefs(say=say)
    except KpctlError as e:
        checks.append(Check("tracefs", False, e.message, e.hint or ""))
        return checks
    checks.append(Check("tracefs", True, f"mounted at {tracefs}"))
    checks.append(_kprobes_enabled(tracefs))
    checks.append(_lockdown())
    checks.append(Check(
        "instances", (tracefs / "instances").is_dir(), "tracefs instances (kpctl reads hits from its own)",
        "the kernel's tracefs is too old for instances",
    ))
    checks.append(Check(
        "error_log", (tracefs / "error_log").exists(), "the kernel explains rejected probes",
        "kernels before 5.4 only return EINVAL; kpctl then cannot say why", required=False,
    ))
    checks.append(_kallsyms_addresses())
    for kind in BACKEND_TYPES:
        available = kind.availability(Tracefs(tracefs))
        lifetime = "probes outlive kpctl" if kind.outlives_kpctl else "probes live while kpctl runs"
        checks.append(Check(
            f"backend {kind.name}", available.usable, f"{kind.summary}; {lifetime}: {available.detail}",
            available.fix, required=kind.name == DEFAULT_BACKEND.name,
        ))
    for engine in ENGINE_TYPES:
        available = engine.availability(Tracefs(tracefs))
        checks.append(Check(f"counting engine {engine.name}", available.usable, f"{engine.summary} (count, hist, latency, stacks): "
                            f"{available.detail}", available.fix, required=False))
    if (tracefs / "kprobe_events").exists():
        supported = detect_features(_read(tracefs / "README") or "")
        for feature in FEATURES:
            checks.append(Check(
                feature.key, supported[feature.key], feature.description,
                f"needs a kernel with it (mainline {feature.since})", required=False,
            ))
    else:  # tracefs README describes uprobes' syntax too: it says nothing about kprobes here
        checks.append(Check("kprobe syntax", False, "unknown, because this kernel has no kprobe_events", required=False))
    checks.extend(_other_commands(tracefs))
    return checks


def _mounted(fstype: str) -> bool | None:
    mounts = _read(Path("/proc/mounts"))
    return None if mounts is None else any(line.split()[2:3] == [fstype] for line in mounts.splitlines())


def _kprobes_enabled(tracefs: Path) -> Check:
    """Required only when known: add and watch work without debugfs."""
    path = DEBUGFS / "kprobes" / "enabled"
    enabled = _read(path)
    if enabled is not None:
        return Check("kprobes enabled", enabled.strip() == "1", f"{path} is {enabled.strip()}", f"echo 1 | sudo tee {path}")
    # CONFIG_KPROBES brings debugfs kprobes, and kprobe_events and the PMU with CONFIG_KPROBE_EVENTS (its
    # default): with none of them, mounting debugfs would not help.
    if not any(p.exists() for p in (tracefs / "kprobe_events", KPROBE_PMU, path.parent)):
        return Check("kprobes enabled", False, "this kernel has no kprobes: no kprobe_events, perf kprobe PMU or "
                     "debugfs kprobes", "the kernel needs CONFIG_KPROBES=y")
    if _mounted("debugfs") is False:
        return Check("kprobes enabled", False, "unknown, because debugfs is not mounted",
                     f"sudo mount -t debugfs none {DEBUGFS}", required=False)
    return Check("kprobes enabled", False, f"unknown, because {path} cannot be read",
                 "the kernel needs CONFIG_KPROBES=y; as root", required=False)


def kallsyms_shows_addresses(path: Path) -> bool:
    """Whether kallsyms shows real addresses, judged by its text symbols: x86_64 lists
    per-CPU symbols at 0 first (`0000000000000000 A fixed_percpu_data`) even to root.
    Reads up to the first text symbol with an address, not all of the file's 100,000
    lines and more. OSError when it cannot be read."""
    with open(path, errors="replace") as lines:
        return any(kind in ("T", "t") and address.strip("0") for address, kind, _ in (line.split(" ", 2) for line in lines))


def _kallsyms_addresses() -> Check:
    name = "kallsyms addresses"
    try:
        shown = kallsyms_shows_addresses(KALLSYMS)
    except FileNotFoundError:
        return Check(name, False, f"{KALLSYMS} does not exist", "the kernel needs CONFIG_KALLSYMS=y", required=False)
    except OSError as e:
        return Check(name, False, f"{KALLSYMS} cannot be read ({e.strerror})", required=False)
    # kallsyms_show_value(): hidden from readers without CAP_SYSLOG, and from root too at kptr_restrict=2.
    fix = ("sysctl kernel.kptr_restrict=1 (2 hides them from root too)" if os.geteuid() == 0
           else "run as root (with kernel.kptr_restrict below 2)")
    return Check(name, shown, f"{KALLSYMS} shows real addresses", fix, required=False)


def _lockdown() -> Check:
    fix = "lockdown=confidentiality forbids kprobes: boot with lockdown=none or without Secure Boot"
    lockdown = read_lockdown()
    if lockdown is not None:
        return Check("lockdown", lockdown in ("none", "integrity"), f"lockdown is {lockdown}", fix)
    if _mounted("securityfs") is False:
        return Check("lockdown", False, "unknown, because securityfs is not mounted",
                     "sudo mount -t securityfs none /sys/kernel/security", required=False)
    return Check("lockdown", True, "not built in (securityfs has no lockdown file)")


def _readable(name: str, path: Path, what: str, missing_fix: str, refused_fix: str) -> Check:
    """A row for a file a command reads, established by opening it: os.access() says yes
    to root where the kernel refuses the open itself (lockdown, EPERM)."""
    try:
        with open(path, "rb"):
            return Check(name, True, f"{path}: {what}")
    except FileNotFoundError:
        return Check(name, False, f"{path} does not exist: {what}", missing_fix, required=False)
    except OSError as e:
        return Check(name, False, f"{path} cannot be read ({e.strerror}): {what}", refused_fix, required=False)


def _other_commands(tracefs: Path) -> list[Check]:
    """What funcs, inspect and the module need, beyond probes."""
    return [
        _readable("funcs: traceable functions", tracefs / "available_filter_functions",
                  "funcs tells notrace functions by it", "the kernel needs CONFIG_FUNCTION_TRACER",
                  "as root; the kernel refused it here (see the lockdown row)"),
        _readable("inspect: /proc/kcore", Path("/proc/kcore"), "inspect reads live code there",
                  "the kernel needs CONFIG_PROC_KCORE", "as root, and not locked down to confidentiality"),
        Check("inspect: capstone", importlib.util.find_spec("capstone") is not None, "inspect disassembles with it",
              "pip install capstone (or apt install python3-capstone)", required=False),
        Check("perf kprobe PMU", (KPROBE_PMU / "type").exists(),
              "kprobes through perf_event_open(2), as BPF tools (bcc, bpftrace) and perf attach them",
              "the kernel needs CONFIG_KPROBE_EVENTS and CONFIG_PERF_EVENTS", required=False),
        Check("kmod: module loading", modules_supported(), "the kernel loads modules (CONFIG_MODULES)",
              tracefs_instead(Tracefs(tracefs), "this kernel cannot load modules: use the tracefs backend"),
              required=False),
        _headers(),
    ]


def _headers() -> Check:
    release = os.uname().release
    headers = Path("/lib/modules") / release / "build"
    if not modules_supported():  # no package would help
        return Check("kmod: kernel headers", False, f"{headers}: not needed, this kernel cannot load modules",
                     required=False)
    return Check("kmod: kernel headers", (headers / "Makefile").exists(), str(headers),
                 f"install the headers of this kernel (Debian's kernels: apt install linux-headers-{release})",
                 required=False)
