"""Every backend kpctl has, and what each declares: its name, whether it can work on
this machine (and why not), whether its probes outlive kpctl, and how to open it. The
CLI's --backend choices, doctor's rows and the probe manager come from here; a new way
into the kernel is a module in kpctl/backends/ and an entry in BACKEND_TYPES.

Opening imports the backend's module only then: the module's client pulls in pyroute2,
which costs more start-up than the rest of kpctl.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from kpctl.errors import KpctlError

if TYPE_CHECKING:
    from kpctl.backends.base import ProbeBackend
    from kpctl.tracefs import Tracefs


# NamedTuples, not dataclasses: every command imports this module, and a dataclass costs
# a millisecond of start-up to build.
class Availability(NamedTuple):
    """Whether a backend can work here; when not, why and what to do."""
    usable: bool
    detail: str
    fix: str = ""


class BackendType(NamedTuple):
    name: str
    summary: str  # one line for --help and doctor
    outlives_kpctl: bool  # its probes stay after kpctl exits (False: they die with it)
    availability: Callable[[Tracefs], Availability]
    open: Callable[[Tracefs, str], ProbeBackend]  # (tracefs, group) -> backend

    def require(self, tracefs: Tracefs) -> None:
        """KpctlError when this backend cannot work here."""
        available = self.availability(tracefs)
        if not available.usable:
            raise KpctlError(f"backend {self.name} is not available: {available.detail}", available.fix or None)


def _tracefs_availability(tracefs: Tracefs) -> Availability:
    if tracefs.path("kprobe_events").exists():
        return Availability(True, f"{tracefs.path('kprobe_events')}")
    return Availability(False, "this kernel has no kprobe_events", "the kernel needs CONFIG_KPROBE_EVENTS=y")


def tracefs_instead(tracefs: Tracefs, advice: str) -> str:
    """advice, which turns to the tracefs backend, where that backend works; else what
    the kernel lacks for it."""
    if _tracefs_availability(tracefs).usable:
        return advice
    return "this kernel has no kprobe_events for the tracefs backend either: it needs CONFIG_KPROBE_EVENTS=y"


def _open_tracefs(tracefs: Tracefs, group: str) -> ProbeBackend:
    from kpctl.backends.tracefs import TracefsBackend

    return TracefsBackend(tracefs, group=group)


def _bpf_availability(tracefs: Tracefs) -> Availability:
    import importlib.util
    from pathlib import Path

    if importlib.util.find_spec("bcc") is None:
        from kpctl.backends.bpf import INSTALL_HINT

        return Availability(False, "bcc is not installed for this Python", INSTALL_HINT)
    if not Path("/sys/bus/event_source/devices/kprobe/type").exists():
        return Availability(False, "this kernel has no perf kprobe PMU", "the kernel needs CONFIG_KPROBE_EVENTS, CONFIG_BPF_EVENTS")
    return Availability(True, "bcc and the perf kprobe PMU are here")


def _open_bpf(tracefs: Tracefs, group: str) -> ProbeBackend:
    from kpctl.backends.bpf import TRACEFS_FETCHES, BpfBackend, import_bcc

    import_bcc()
    return BpfBackend(tracefs, group, fetch_hint=tracefs_instead(tracefs, TRACEFS_FETCHES))


def _kmod_availability(tracefs: Tracefs) -> Availability:
    from kpctl.kmod import MODULE, is_loaded, modules_supported

    if is_loaded():
        return Availability(True, f"{MODULE} is loaded")
    if not modules_supported():  # building and loading it would only fail
        return Availability(False, "this kernel cannot load modules (it was built without CONFIG_MODULES)",
                            tracefs_instead(tracefs, "the tracefs backend needs no module"))
    return Availability(False, f"{MODULE} is not loaded", "sudo kpctl kmod build && sudo kpctl kmod load")


def _open_kmod(tracefs: Tracefs, group: str) -> ProbeBackend:
    from kpctl.backends.kmod import KmodBackend

    return KmodBackend(tracefs, group=group)


BACKEND_TYPES: tuple[BackendType, ...] = (
    BackendType("tracefs", "kprobe_events, the kernel's own interface", True, _tracefs_availability, _open_tracefs),
    BackendType("kmod", "kpctl's kernel module over netlink (kpctl kmod load)", True, _kmod_availability, _open_kmod),
    BackendType("bpf", "BPF programs through bcc, alive while kpctl runs (kpctl trace)", False, _bpf_availability,
                _open_bpf),
)
DEFAULT_BACKEND = BACKEND_TYPES[0]


def backend_type(name: str) -> BackendType:
    for kind in BACKEND_TYPES:
        if kind.name == name:
            return kind
    raise KpctlError(f"no backend named {name}", f"backends: {', '.join(t.name for t in BACKEND_TYPES)}")
