"""`kpctl gc`: remove what kpctl made for a process that is gone, and nothing else.

A process killed with SIGKILL runs no cleanup. What it leaves is known by name or by
record: the groups and instances of counting commands and bench carry their pid
(kpctl_count_PID, kpctl_lat_PID, with synthetic events kpctl_lat_PID_N, kpctl_bench_PID
with an fprobe and module probes kpctl_bench_PID_N), inspect --arm's events and instance
too (kpctl_inspect/pPID, kpctl_inspect_pPID); `kpctl trace`'s probes are in the user's
group and have an owner record naming their backend, and a setting bench changed has a
record of its value before (owners.py). Each goes through the backend that made it.
Other tools' probes and groups are never looked at twice.
"""
from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast

from kpctl.backends.tracefs import TracefsBackend
from kpctl.errors import KpctlError
from kpctl.owners import Owners, SavedSettings
from kpctl.registry import backend_type
from kpctl.sessions import INSPECT_GROUP, session_of
from kpctl.tracefs import Tracefs

if TYPE_CHECKING:
    from kpctl.backends.kmod import KmodBackend


def _dead(name: str, proc: Path, group: str | None = None, purpose: str | None = None) -> bool:
    """name (of a thing in group) is a kpctl process's own (made for purpose), and that
    process is gone."""
    session = session_of(name, group)
    return (session is not None and purpose in (None, session.purpose)
            and not (proc / str(session.pid)).exists())


@dataclass
class Collected:
    """What gc removed, and what it could not, with why (one line each)."""
    removed: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)

    @contextmanager
    def removing(self, what: str) -> Iterator[None]:
        """Remove what in the block; a refusal is noted, never raised: gc runs before
        other commands, which must not fail for what a dead process left."""
        try:
            yield
        except (OSError, KpctlError) as e:
            self.left.append(f"{what}: {e.strerror if isinstance(e, OSError) else e.message}")
        else:
            self.removed.append(what)


def collect(tracefs: Tracefs, owners: Owners) -> Collected:
    """Remove what dead kpctl processes left."""
    done = Collected()
    proc = tracefs.proc
    with tracefs.changing():
        # Instances first, their triggers before them: a hist trigger with variables
        # holds its instance (rmdir: EBUSY) and the events and synthetic events it uses.
        for path in sorted(tracefs.path("instances").glob("kpctl*")):
            if _dead(path.name, proc):
                with done.removing(f"instance {path.name}"):
                    tracefs.remove_triggers(f"instances/{path.name}")
                    if not tracefs.remove_instance(f"instances/{path.name}"):
                        raise OSError(errno.EBUSY, "busy: something still holds it")
        # A kernel without synthetic events (or kprobe events) has none of them to leave.
        synthetic = tracefs.read("synthetic_events").splitlines() if tracefs.path("synthetic_events").exists() else []
        for line in synthetic:
            name = line.split(None, 1)[0] if line.strip() else ""  # the kernel separates fields with a tab
            if _dead(name, proc):
                with done.removing(f"synthetic event {name}"):
                    tracefs.append_command("synthetic_events", f"!{line}")
        # fprobes (bench's, where the kernel has them) are only in dynamic_events.
        dynamic = tracefs.read("dynamic_events").splitlines() if tracefs.path("dynamic_events").exists() else []
        for line in dynamic:
            group, _, event = line.split(None, 1)[0].partition(":")[2].partition("/")
            if line.startswith("f:") and _dead(group, proc):
                with done.removing(f"fprobe {group}/{event}"):
                    tracefs.append_command("dynamic_events", f"-:{group}/{event}")
        dead: dict[str, list[str]] = {}
        probes = tracefs.defined_probes() if tracefs.path("kprobe_events").exists() else []
        for probe in probes:
            group, event = probe.group or "", probe.event or ""
            if _dead(group, proc) or (group == INSPECT_GROUP and _dead(event, proc, group)):
                dead.setdefault(group, []).append(event)
        defined = {(p.group, p.event) for p in probes}
        module_backend = _module_backend(tracefs)
        module = [info.name for info in module_backend.list_probes()] if module_backend is not None else []
        dead_in_module = [name for name in module if _dead(name, proc, purpose="bench")]
        for group, event, owner in owners.orphans():
            if owner.backend == "kmod":
                if event in module and event not in dead_in_module:
                    dead_in_module.append(event)
            elif (group, event) in defined and event not in dead.get(group, []):
                dead.setdefault(group, []).append(event)
            owners.release(group, event)
        for group, events in dead.items():
            for event in events:
                with done.removing(f"probe {group}/{event}"):
                    TracefsBackend(tracefs, group=group).remove([event])
        for name in dead_in_module:
            with done.removing(f"module probe {name}"):
                assert module_backend is not None  # the names came from it
                module_backend.remove([name])
        if module_backend is not None:
            module_backend.close()
        restored, left = SavedSettings.beside(owners).restore_orphans()
        done.removed.extend(restored)
        done.left.extend(left)
    return done


def _module_backend(tracefs: Tracefs) -> KmodBackend | None:
    """The module's backend, if it is loaded (only then is its client, and pyroute2,
    imported)."""
    kmod = backend_type("kmod")
    return cast("KmodBackend", kmod.open(tracefs, "")) if kmod.availability(tracefs).usable else None
