"""`kpctl gc`: remove what kpctl made for a process that is gone, and nothing else; and
owned_session(), inside which a process makes its own short-lived things and whose end
removes them through the same code.

A process killed with SIGKILL runs no cleanup. What it leaves is known by name or by
record: a session's groups, instances, synthetic events, fprobes, probes and module
probes carry its pid (sessions.py); `kpctl trace`'s probes are in the user's group and
have an owner record naming their backend, and a setting bench changed has a record of
its value before (owners.py). Each goes through the backend that made it. Other tools'
probes and groups are never looked at twice.
"""
from __future__ import annotations

import errno
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, NamedTuple, cast

from kpctl.backends.tracefs import TracefsBackend
from kpctl.errors import KpctlError
from kpctl.model import Probe
from kpctl.owners import Owners, SavedSettings
from kpctl.registry import backend_type
from kpctl.sessions import INSPECT_GROUP, Session, session_of
from kpctl.signals import signals_held, stop_on_sigterm
from kpctl.tracefs import KPCTL_INSTANCE, Tracefs

if TYPE_CHECKING:
    from kpctl.backends.kmod import KmodBackend

MODULE_PROBE_MAKERS = ("bench",)  # the purposes that put probes in the module
_BUSY_TRIES, _BUSY_WAIT = 20, 0.025  # seconds: half a second for a busy instance


class Leftover(NamedTuple):
    """One thing a process made, as gc names it, and how it goes."""
    what: str
    session: Session | None  # None: a probe whose owner record says its maker is gone
    remove: Callable[[], None]


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


class _Finder:
    """The kinds of things a process leaves, each listed as Leftovers, in the order they
    must go: instances first, their triggers before them (a hist trigger with variables
    holds its instance, rmdir: EBUSY, and the events and synthetic events it uses)."""

    def __init__(self, tracefs: Tracefs, owners: Owners, only: Session | None, closing: ExitStack) -> None:
        self.tracefs = tracefs
        self.owners = owners
        self.only = only
        self.closing = closing
        self._module: KmodBackend | None = None
        self._module_looked_for = False

    def kinds(self) -> list[Callable[[], Iterator[Leftover]]]:
        return [self.instances, self.synthetic_events, self.fprobes, self.probes, self.module_probes, self.owned_probes]

    def _lines(self, relative: str) -> list[str]:
        """A file's lines; none where the kernel has no such file (no synthetic events,
        no kprobe events)."""
        return self.tracefs.read(relative).splitlines() if self.tracefs.path(relative).exists() else []

    def instances(self) -> Iterator[Leftover]:
        for path in sorted(self.tracefs.path("instances").glob("kpctl*")):
            if session := session_of(path.name):
                yield Leftover(f"instance {path.name}", session, partial(self._remove_instance, path.name, session.group))

    def _remove_instance(self, name: str, group: str) -> None:
        # A session puts triggers on its own group's events and on synthetic ones only:
        # the instance's thousands of other events need not be read.
        self.tracefs.remove_triggers(f"instances/{name}", (group, "synthetic"))
        # A reader of one of its files (cat, a monitoring tool) holds it for a moment.
        for _ in range(_BUSY_TRIES):
            if self.tracefs.remove_instance(f"instances/{name}"):
                return
            time.sleep(_BUSY_WAIT)
        raise OSError(errno.EBUSY, "busy: something still holds it")

    def synthetic_events(self) -> Iterator[Leftover]:
        for line in self._lines("synthetic_events"):
            name = line.split(None, 1)[0] if line.strip() else ""  # the kernel separates fields with a tab
            if session := session_of(name):
                yield Leftover(f"synthetic event {name}", session,
                               partial(self.tracefs.append_command, "synthetic_events", f"!{line}"))

    def fprobes(self) -> Iterator[Leftover]:
        """fprobes (bench's, where the kernel has them) are only in dynamic_events."""
        for line in self._lines("dynamic_events"):
            group, _, event = line.split(None, 1)[0].partition(":")[2].partition("/")
            if line.startswith("f:") and (session := session_of(group)):
                yield Leftover(f"fprobe {group}/{event}", session,
                               partial(self.tracefs.append_command, "dynamic_events", f"-:{group}/{event}"))

    def _probe_remover(self, group: str, event: str, instance: str = KPCTL_INSTANCE) -> Callable[[], None]:
        """The removal of a probe recording into instance (once idle, that goes too)."""
        return partial(TracefsBackend(self.tracefs, group=group, instance=instance).remove, [event])

    def probes(self) -> Iterator[Leftover]:
        for probe in self._defined():
            group, event = probe.group or "", probe.event or ""
            if session := session_of(event, group) if group == INSPECT_GROUP else session_of(group):
                yield Leftover(f"probe {group}/{event}", session, self._probe_remover(group, event, session.instance))

    def _defined(self) -> list[Probe]:
        return self.tracefs.defined_probes() if self.tracefs.path("kprobe_events").exists() else []

    def module(self) -> KmodBackend | None:
        """The module's backend, if it is loaded (only then is its client, and pyroute2,
        imported), opened once."""
        if not self._module_looked_for:
            self._module_looked_for = True
            kmod = backend_type("kmod")
            if kmod.availability(self.tracefs).usable:
                self._module = cast("KmodBackend", kmod.open(self.tracefs, ""))
                self.closing.callback(self._module.close)
        return self._module

    def module_probes(self) -> Iterator[Leftover]:
        if self.only is not None and self.only.purpose not in MODULE_PROBE_MAKERS:
            return  # no need to ask the module
        module = self.module()
        if module is None:
            return
        for info in module.list_probes():
            session = session_of(info.name)
            if session is not None and session.purpose in MODULE_PROBE_MAKERS:
                yield Leftover(f"module probe {info.name}", session, self._module_remover(module, info.name))

    def _module_remover(self, module: KmodBackend, name: str) -> Callable[[], None]:
        return partial(module.remove, [name])

    def owned_probes(self) -> Iterator[Leftover]:
        """Probes with an owner record (`kpctl trace`'s) whose owner is gone, through the
        backend the record names; a record whose probe is gone already just goes."""
        if self.only is not None:
            return  # a session's things carry its pid: it records no owners
        defined = {(p.group, p.event) for p in self._defined()}
        module = self.module()
        in_module = {info.name for info in module.list_probes()} if module is not None else set()
        for group, event, owner in self.owners.orphans():
            if owner.backend == "kmod" and event in in_module:
                assert module is not None  # the names came from it
                remove, what = self._module_remover(module, event), f"module probe {event}"
            elif owner.backend != "kmod" and (group, event) in defined:
                remove, what = self._probe_remover(group, event), f"probe {group}/{event}"
            else:
                self.owners.release(group, event)
                continue
            yield Leftover(what, None, self._then_released(remove, group, event))

    def _then_released(self, remove: Callable[[], None], group: str, event: str) -> Callable[[], None]:
        """remove, and the record once that is done: a refused removal keeps it for the next gc."""
        def removing() -> None:
            remove()
            self.owners.release(group, event)
        return removing


def collect(tracefs: Tracefs, owners: Owners, only: Session | None = None) -> Collected:
    """Remove what dead kpctl processes left, and the settings they changed; or, given
    only, everything that session made (its process is this one, alive)."""
    done = Collected()
    with tracefs.changing(), ExitStack() as closing:
        finder = _Finder(tracefs, owners, only, closing)
        for kind in finder.kinds():
            for leftover in kind():
                # session None: an owner record's, whose maker is known to be gone.
                wanted = (leftover.session == only if only is not None
                          else leftover.session is None or leftover.session.gone(tracefs.proc))
                if wanted:
                    with done.removing(leftover.what):
                        leftover.remove()
        if only is None:
            restored, left = SavedSettings.beside(owners).restore_orphans()
            done.removed.extend(restored)
            done.left.extend(left)
    return done


@contextmanager
def owned_session(tracefs: Tracefs, purpose: str) -> Iterator[Session]:
    """This process's session for purpose: the block makes its things under the session's
    names, and they all go when it ends, however it ends (SIGTERM is raised in it as
    StopRequested), through gc's own removal, with signals held until that is done. What
    the kernel refuses to remove is an error naming it: never reported as removed."""
    session = Session.mine(purpose)
    with stop_on_sigterm():
        try:
            yield session
        finally:
            with signals_held():
                done = collect(tracefs, Owners(proc=tracefs.proc), only=session)
            if done.left:
                raise KpctlError(f"could not remove {'; '.join(done.left)}",
                                 "kpctl gc removes it once whatever holds it lets go")
