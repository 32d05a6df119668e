"""`kpctl doctor`: what works on this machine, and the fix for what does not."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from kpctl.errors import KpctlError
from kpctl.features import FEATURES, detect_features
from kpctl.registry import BACKEND_TYPES, DEFAULT_BACKEND
from kpctl.tracefs import DEBUGFS, Tracefs, find_tracefs, read_lockdown


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


def run_checks() -> list[Check]:
    checks = [
        Check("root", os.geteuid() == 0, f"euid {os.geteuid()}", "run kpctl with sudo"),
    ]
    try:
        tracefs = find_tracefs(mount=False)
    except KpctlError as e:
        checks.append(Check("tracefs", False, e.message, e.hint or ""))
        return checks
    checks.append(Check("tracefs", True, f"mounted at {tracefs}"))
    checks.append(Check(
        "kprobe_events", (tracefs / "kprobe_events").exists(), str(tracefs / "kprobe_events"),
        "the kernel needs CONFIG_KPROBES=y and CONFIG_KPROBE_EVENTS=y",
    ))
    enabled = _read(DEBUGFS / "kprobes" / "enabled")
    if enabled is None:
        checks.append(Check(
            "kprobes enabled", False, "unknown: debugfs is not mounted",
            "sudo mount -t debugfs none /sys/kernel/debug",
        ))
    else:
        checks.append(Check(
            "kprobes enabled", enabled.strip() == "1", f"{DEBUGFS}/kprobes/enabled is {enabled.strip()}",
            f"echo 1 | sudo tee {DEBUGFS}/kprobes/enabled",
        ))
    lockdown = read_lockdown()
    checks.append(Check(
        "lockdown", lockdown in (None, "none", "integrity"),
        f"lockdown is {lockdown or 'not built in'}",
        "lockdown=confidentiality forbids kprobes: boot with lockdown=none or without Secure Boot",
    ))
    checks.append(Check(
        "instances", (tracefs / "instances").is_dir(), "tracefs instances (kpctl reads hits from its own)",
        "the kernel's tracefs is too old for instances",
    ))
    checks.append(Check(
        "error_log", (tracefs / "error_log").exists(), "the kernel explains rejected probes",
        "kernels before 5.4 only return EINVAL; kpctl then cannot say why", required=False,
    ))
    kallsyms = _read(Path("/proc/kallsyms"))
    first = kallsyms.split(" ", 1)[0] if kallsyms else ""
    checks.append(Check(
        "kallsyms addresses", bool(first.strip("0")), "/proc/kallsyms shows real addresses",
        "run as root, or sysctl kernel.kptr_restrict=0", required=False,
    ))
    for kind in BACKEND_TYPES:
        available = kind.availability(Tracefs(tracefs))
        lifetime = "probes outlive kpctl" if kind.outlives_kpctl else "probes live while kpctl runs"
        checks.append(Check(
            f"backend {kind.name}", available.usable, f"{kind.summary}; {lifetime}: {available.detail}",
            available.fix, required=kind.name == DEFAULT_BACKEND.name,
        ))
    readme = _read(tracefs / "README") or ""
    supported = detect_features(readme)
    for feature in FEATURES:
        checks.append(Check(
            feature.key, supported[feature.key], feature.description,
            f"needs a kernel with it (mainline {feature.since})", required=False,
        ))
    return checks
