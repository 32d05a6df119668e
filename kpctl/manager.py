"""kpctl's probes in every backend usable here, managed as one: what list, stats, rm,
enable, disable and watch work on. A name belongs to one backend: add refuses a name
another backend already has. short_lived() gives probes that live only for a block."""
from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Protocol

from kpctl.backends.base import ProbeBackend, ProbeInfo, ProbeStats
from kpctl.errors import ProbeExistsError, ProbeNotFoundError, UsageError, check_given_once, check_probe_names, clipped
from kpctl.gc import owned_session
from kpctl.model import Probe
from kpctl.registry import BACKEND_TYPES, DEFAULT_BACKEND, backend_type
from kpctl.sessions import WATCH_INSTANCES, session_of
from kpctl.signals import signals_held, stop_on_sigterm
from kpctl.tracefs import KPCTL_INSTANCE, Tracefs

if TYPE_CHECKING:
    from kpctl.hits import ProbeNamer
    from kpctl.owners import Owners
    from kpctl.symbols import KernelSymbols
    from kpctl.watch import HitSource



class ProbeManager:
    """The backends of BACKEND_TYPES that are usable here, for one group."""

    def __init__(self, tracefs: Tracefs, backends: Sequence[ProbeBackend], group: str) -> None:
        self.tracefs = tracefs
        self.backends = list(backends)
        self.group = group

    @classmethod
    def open(cls, tracefs: Tracefs, group: str, also: Sequence[str] = ()) -> ProbeManager:
        """The usable backends whose probes outlive kpctl (what other kpctl processes made
        is there to see), and those of also, which live only in this process."""
        for name in also:
            backend_type(name).require(tracefs)
        return cls(tracefs, [
            t.open(tracefs, group) for t in BACKEND_TYPES
            if (t.outlives_kpctl or t.name in also) and t.availability(tracefs).usable
        ], group)

    def backend(self, name: str) -> ProbeBackend:
        for backend in self.backends:
            if backend.name == name:
                return backend
        kind = backend_type(name)
        kind.require(self.tracefs)  # says why it is not here
        raise UsageError(f"probes of backend {name} live only while kpctl runs", f"kpctl trace --backend {name}")

    def add(self, probes: Sequence[Probe], *, enable: bool = True, event_filter: str | None = None,
            backend: str = DEFAULT_BACKEND.name) -> list[ProbeInfo]:
        target = self.backend(backend)
        with self.tracefs.changing():  # the names checked are still free when added
            for other in self.backends:
                if other is target:
                    continue
                taken = {i.name for i in other.list_probes()}
                for probe in probes:
                    if probe.event in taken:
                        raise ProbeExistsError(
                            f"a probe named {probe.event} already exists in backend {other.name}",
                            "choose another with --name",
                        )
            infos = target.add(probes, enable=enable, event_filter=event_filter)
            self._reach_watches(target)
        return infos

    def adding_to(self, backend: str) -> ProbeOwner:
        """This manager, adding to one backend: what short_lived() takes."""
        manager = self

        class Into:
            def add(self, probes: Sequence[Probe], *, enable: bool = True, event_filter: str | None = None) -> list[ProbeInfo]:
                return manager.add(probes, enable=enable, event_filter=event_filter, backend=backend)

            def remove(self, names: Sequence[str]) -> None:
                manager.remove(names)

        return Into()

    def expand(self, patterns: Sequence[str]) -> list[str]:
        """Probe names, each pattern with a shell glob (``vfs_*``) replaced by the names
        it matches, in listing order; a glob that matches nothing is an error, and so is
        a pattern given twice (globs that overlap are fine)."""
        check_given_once(patterns, "probe")
        if not any(c in p for p in patterns for c in "*?["):
            return list(patterns)
        import fnmatch

        existing = [i.name for i in self.list_probes()]
        names: list[str] = []
        for pattern in patterns:
            if not any(c in pattern for c in "*?["):
                names.append(pattern)
                continue
            matched = fnmatch.filter(existing, pattern)
            if not matched:
                raise ProbeNotFoundError(f"no probe matches {pattern} in group {self.group}", "see: kpctl list")
            names.extend(m for m in matched if m not in names)
        return names

    def unloaded_modules(self, probes: Sequence[Probe]) -> list[str]:
        """The modules probes name that are not loaded: the kernel takes such a probe
        and arms it only once the module loads."""
        wanted = sorted({p.target.module for p in probes if p.target.module})
        if not wanted:
            return []
        loaded = self.tracefs.loaded_modules()
        return [m for m in wanted if loaded is not None and m not in loaded]

    def dry_run(self, probes: Sequence[Probe], *, enable: bool = True, event_filter: str | None = None,
                backend: str = DEFAULT_BACKEND.name) -> tuple[list[str], list[int | None]]:
        """What add() would ask of the kernel, and where each probe would sit (None when
        kallsyms cannot say: no such symbol, or addresses hidden), asking nothing."""
        requests = self.backend(backend).requests(probes, enable=enable, event_filter=event_filter)
        return requests, [self._address(p) for p in probes]

    def _address(self, probe: Probe) -> int | None:
        target = probe.target
        if target.address is not None:
            return target.address
        found = self.tracefs.symbols.functions_named(target.symbol or "", target.module)
        return found[0].address + target.offset if len(found) == 1 and found[0].address else None

    def _split(self, names: Sequence[str]) -> list[tuple[ProbeBackend, list[str]]]:
        """Which backend holds each name; an unknown name is an error before any change."""
        owner = {i.name: b for b in self.backends for i in b.list_probes()}
        check_probe_names(names, owner, f"group {self.group}")
        return [(b, [n for n in names if owner[n] is b]) for b in self.backends if any(owner[n] is b for n in names)]

    def remove(self, names: Sequence[str]) -> None:
        with self.tracefs.changing():
            for backend, own in self._split(names):
                backend.remove(own)

    def remove_all(self) -> list[str]:
        with self.tracefs.changing():
            return [name for backend in self.backends for name in backend.remove_all()]

    def enable(self, names: Sequence[str]) -> None:
        with self.tracefs.changing():
            for backend, own in self._split(names):
                backend.enable(own)
                self._reach_watches(backend)

    def disable(self, names: Sequence[str]) -> None:
        with self.tracefs.changing():
            for backend, own in self._split(names):
                backend.disable(own)

    def list_probes(self) -> list[ProbeInfo]:
        return [info for backend in self.backends for info in backend.list_probes()]

    def stats(self) -> list[ProbeStats]:
        return [s for backend in self.backends for s in backend.stats()]

    def probe_namers(self) -> dict[str, ProbeNamer]:
        namers: dict[str, ProbeNamer] = {}
        for backend in self.backends:
            namers.update(backend.probe_namers())
        return namers

    # --- reading hits ----------------------------------------------------------------

    @contextmanager
    def reading(self, drop_unread: bool = False, backends: Collection[str] | None = None) -> Iterator[list[HitSource]]:
        """The sources of hits for one watch (of the named backends' probes, or all).
        trace_pipe hands each hit to one reader only, so the first watch (holding a flock
        on kpctl's instance) reads that, hits waiting there included unless drop_unread,
        and a watch started beside it reads an instance of its own with the same events
        on, removed when it ends."""
        from kpctl.watch import TracePipeSource  # only watches read: list and rm start faster

        wanted = [b for b in self.backends if backends is None or b.name in backends]
        own_sources = [s for backend in wanted for s in backend.hit_sources()]
        if not any(b.hits_in_tracefs for b in wanted):
            yield own_sources
            return
        with self.tracefs.changing():  # no rm removes the idle instance meanwhile
            self.tracefs.make_instance(KPCTL_INSTANCE)
            fd = os.open(self.tracefs.path(KPCTL_INSTANCE), os.O_RDONLY | os.O_DIRECTORY)
        try:
            with ExitStack() as stack:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    instance = KPCTL_INSTANCE
                    if drop_unread:  # truncating an instance's trace empties only its buffer
                        self.tracefs.write_value(f"{instance}/trace", "")
                except BlockingIOError:
                    instance = stack.enter_context(self._own_instance())  # starts empty
                pipe = stack.enter_context(TracePipeSource(self.tracefs.path(f"{instance}/trace_pipe")))
                yield [pipe, *own_sources]
        finally:
            os.close(fd)

    @contextmanager
    def _own_instance(self) -> Iterator[str]:
        with owned_session(self.tracefs, "watch") as session:
            self.tracefs.make_instance(session.instance)
            with self.tracefs.changing():
                for backend in self.backends:
                    backend.record_into(session.instance)
            yield session.instance

    def _reach_watches(self, backend: ProbeBackend) -> None:
        """What backend just turned on reaches the watches that read instances of their
        own; not those of killed watches (SIGKILL leaves them, for gc)."""
        for path in self.tracefs.path("instances").glob(WATCH_INSTANCES):
            session = session_of(path.name)
            if session is None or session.gone(self.tracefs.proc):
                continue
            try:
                backend.record_into(f"instances/{path.name}")
            except FileNotFoundError:
                pass  # that watch just ended and removed its instance


class ProbeOwner(Protocol):
    """What short_lived() needs: a ProbeManager, or one backend."""

    def add(self, probes: Sequence[Probe], *, enable: bool = True, event_filter: str | None = None) -> list[ProbeInfo]: ...

    def remove(self, names: Sequence[str]) -> None: ...


@contextmanager
def short_lived(owner: ProbeOwner, probes: Sequence[Probe], event_filter: str | None = None,
                enable: bool = True, records: tuple[Owners, str, str] | None = None) -> Iterator[float]:
    """probes (enabled unless told not) for the block only: removed however it ends
    (return, exception, Ctrl-C, or SIGTERM, raised as StopRequested in the block). Yields
    the time they were added. add() undoes itself when interrupted; the removal runs
    with signals held. With records (a store, the command's name and the backend), each probe's owner
    is recorded before it exists, for `kpctl gc` should this process be killed."""
    names = [p.event for p in probes if p.event]
    with stop_on_sigterm():
        if records is not None:
            for probe in probes:
                records[0].claim(probe.group or "", probe.event or "", records[1], records[2])
        try:
            owner.add(probes, enable=enable, event_filter=event_filter)
            try:
                yield time.monotonic()
            finally:
                with signals_held():
                    owner.remove(names)
        finally:
            if records is not None:
                for probe in probes:
                    records[0].release(probe.group or "", probe.event or "")


def is_glob(target: str) -> bool:
    return any(c in target for c in "*?[")


def expand_targets(symbols: KernelSymbols, targets: Sequence[str], limit: int) -> tuple[list[str], dict[str, str]]:
    """targets, each glob (``vfs_*``) replaced by the probeable functions it names,
    and what the globs left out with why. More than limit probes is an error: one
    command must not flood the kernel (bcc's and bpftrace's lesson)."""
    expanded: list[str] = []
    left: dict[str, str] = {}
    for target in targets:
        if not is_glob(target):
            expanded.append(target)
            continue
        pattern = target.removesuffix("%return")
        kept, skipped = symbols.probeable_matches(pattern)
        if not kept:
            reasons = set(skipped.values())
            why = (f": {len(skipped)} match, and {reasons.pop()}" if len(reasons) == 1
                   else f": {len(skipped)} match, none can be probed" if skipped else "")
            raise ProbeNotFoundError(f"no probeable function matches {clipped(pattern)}{why}",
                                     f"see: kpctl funcs '{clipped(pattern)}'")
        expanded.extend(name + target[len(pattern):] for name in kept)
        left.update(skipped)
    if len(expanded) > limit:
        raise UsageError(f"{len(expanded)} functions asked for, more than --max-functions {limit}",
                         "narrow the glob, or raise --max-functions")
    return expanded, left
