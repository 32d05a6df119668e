"""Who made each of kpctl's probes that has an owner: a short-lived probe's process, so
that `kpctl gc` can remove those whose maker is gone (a `kpctl trace` killed with
SIGKILL runs no cleanup), or a probe set (`kpctl apply`), which owns its probes until
it is deleted.

One small file per probe under /run/kpctl/owners/GROUP/EVENT (a tmpfs: a reboot, which
takes the probes, takes the records too): the process's pid and its start time, which
tells a living owner from a new process that got the same pid, or the set's name.
Beside them, under /run/kpctl/settings, the machine-wide settings a process changed for
a while, with their values before (SavedSettings).
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STATE = Path("/run/kpctl/owners")


def start_time(pid: int, proc: Path = Path("/proc")) -> int | None:
    """When the process started (/proc/PID/stat field 22, clock ticks since boot); None
    when there is no such process."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: fields follow the last ')'.
    return int(stat.rsplit(")", 1)[1].split()[19])


@dataclass(frozen=True)
class Owner:
    what: str  # the command that made the probe (trace, ...), or "set NAME"
    pid: int | None  # None: a probe set's, which lives until the set is deleted
    start: int | None
    probe_set: str | None = None
    backend: str = "tracefs"  # which backend holds the probe: gc removes it through that one

    def alive(self, proc: Path = Path("/proc")) -> bool:
        return self.pid is None or start_time(self.pid, proc) == self.start

    def __str__(self) -> str:
        return self.what if self.pid is None else f"{self.what} (pid {self.pid})"


class Owners:
    """The records, one file per probe."""

    def __init__(self, root: Path = STATE, proc: Path = Path("/proc")) -> None:
        self.root = root
        self.proc = proc

    def _file(self, group: str, event: str) -> Path:
        return self.root / group / event

    def claim(self, group: str, event: str, what: str, backend: str = "tracefs") -> None:
        """This process owns group/event (in backend) from now on. Without the right to
        write the record (not root) kpctl cannot add the probe either, and says why then."""
        pid = os.getpid()
        self._write(group, event, {"what": what, "pid": pid, "start": start_time(pid, self.proc), "backend": backend})

    def claim_for_set(self, group: str, event: str, probe_set: str, owner: str | None) -> None:
        """group/event belongs to probe_set (made by owner, a team or a person) until
        the set is deleted."""
        what = f"set {probe_set}" + (f" ({owner})" if owner else "")
        self._write(group, event, {"what": what, "pid": None, "start": None, "set": probe_set})

    def _write(self, group: str, event: str, record: dict[str, object]) -> None:
        path = self._file(group, event)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(record))
        except PermissionError:
            pass

    def release(self, group: str, event: str) -> None:
        try:
            self._file(group, event).unlink(missing_ok=True)
        except PermissionError:
            pass

    def owner(self, group: str, event: str) -> Owner | None:
        try:
            record = json.loads(self._file(group, event).read_text())
        except (OSError, ValueError):
            return None
        return Owner(record["what"], record["pid"], record["start"], record.get("set"), record.get("backend", "tracefs"))

    def orphans(self) -> list[tuple[str, str, Owner]]:
        """(group, event, owner) of every record whose owner is gone."""
        if not self.root.is_dir():
            return []
        found = []
        for path in sorted(self.root.glob("*/*")):
            owner = self.owner(path.parent.name, path.name)
            if owner is not None and not owner.alive(self.proc):
                found.append((path.parent.name, path.name, owner))
        return found

    def members(self, group: str, probe_set: str) -> list[str]:
        """The events of group that probe_set owns."""
        directory = self.root / group
        if not directory.is_dir():
            return []
        return sorted(p.name for p in directory.iterdir()
                      if (owner := self.owner(group, p.name)) is not None and owner.probe_set == probe_set)


SETTINGS = Path("/run/kpctl/settings")


class SavedSettings:
    """Machine-wide settings a kpctl process changes for a while (bench turns the jump
    optimization off), each recorded with its value before and the process, before it
    is changed: what a SIGKILLed process changed, gc puts back (restore_orphans())."""

    def __init__(self, root: Path = SETTINGS, proc: Path = Path("/proc")) -> None:
        self.root = root
        self.proc = proc

    @classmethod
    def beside(cls, owners: Owners) -> SavedSettings:
        """The records beside owners' (a test's scratch folder, or /run/kpctl)."""
        return cls(owners.root.parent / SETTINGS.name, owners.proc)

    def _records(self) -> list[tuple[Path, dict[str, Any]]]:
        found = []
        for path in sorted(self.root.glob("*.json")) if self.root.is_dir() else []:
            try:
                found.append((path, json.loads(path.read_text())))
            except (OSError, ValueError):
                continue
        return found

    @contextmanager
    def changed(self, setting: Path, value: str, what: str) -> Iterator[None]:
        """setting reads value in the block, and what it read before after it, however
        the block ends (and, if this process is killed, once gc runs)."""
        before = setting.read_text().strip()
        # Another process holds it changed: the value to come back to is the one it saved.
        for _, record in self._records():
            if record["setting"] == str(setting):
                before = record["before"]
        pid = os.getpid()
        record_path = self.root / f"{pid}-{setting.name}.json"
        record_path.parent.mkdir(parents=True, exist_ok=True)
        record_path.write_text(json.dumps({"setting": str(setting), "before": before, "what": what, "pid": pid,
                                           "start": start_time(pid, self.proc)}))
        try:
            setting.write_text(value)
            yield
        finally:
            setting.write_text(before)
            record_path.unlink(missing_ok=True)

    def restore_orphans(self) -> tuple[list[str], list[str]]:
        """Put back what processes that are gone changed: what was put back, and what
        could not be with why (its record stays, for the next gc), one line each."""
        restored, left = [], []
        for path, record in self._records():
            if Owner(record["what"], record["pid"], record["start"]).alive(self.proc):
                continue
            what = f"setting {record['setting']}"
            try:
                Path(record["setting"]).write_text(record["before"])
            except OSError as e:
                left.append(f"{what}: {e.strerror}")
                continue
            path.unlink(missing_ok=True)
            restored.append(f"{what} (back to {record['before']})")
        return restored, left
