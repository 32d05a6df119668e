"""The names of what a kpctl process makes in the kernel for itself alone: made here from
(purpose, pid), and told apart here by the inverse, so that `kpctl gc` finds what a
killed process left, and `list` and `inspect` name the command that made a probe. A
feature makes, uses and removes them inside gc.owned_session(), whose end removes them
through gc's own code.

- count, hist and stacks (tracefs engine): group and instance kpctl_count_PID;
- latency (tracefs engine): kpctl_lat_PID, synthetic events kpctl_lat_PID_N;
- bench: kpctl_bench_PID, its fprobe in that group, module probes kpctl_bench_PID_N;
- inspect --arm: events pPID (and pPID_ret) in group kpctl_inspect, instance
  kpctl_inspect_pPID;
- a watch beside another: instance kpctl-watch-PID.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import NamedTuple

INSPECT_GROUP = "kpctl_inspect"  # inspect --arm's own group: user probes stay untouched
# The command each purpose is, as list and inspect name it.
COMMANDS = {"count": "count", "lat": "latency", "bench": "bench", "inspect": "inspect --arm", "watch": "watch"}

_NAMES = re.compile(
    r"kpctl_(?P<purpose>count|lat|bench)_(?P<pid>\d+)(?:_\d+)?"  # groups, instances; synthetic events, module probes
    r"|kpctl_inspect_p(?P<inspect>\d+)"
    r"|kpctl-watch-(?P<watch>\d+)"
)
_INSPECT_EVENT = re.compile(r"p(\d+)(?:_ret)?\Z")


class Session(NamedTuple):
    """Which kpctl process made a thing, and for what; what it names its things."""
    purpose: str
    pid: int

    @classmethod
    def mine(cls, purpose: str) -> Session:
        assert purpose in COMMANDS, purpose
        return cls(purpose, os.getpid())

    @property
    def name(self) -> str:
        """Its instance's name, and its group's (count, lat, bench)."""
        if self.purpose == "inspect":
            return f"{INSPECT_GROUP}_{self.inspect_event}"
        if self.purpose == "watch":
            return f"kpctl-watch-{self.pid}"
        return f"kpctl_{self.purpose}_{self.pid}"

    @property
    def group(self) -> str:
        """The tracefs group of its probes; inspect's share one, told apart by event."""
        return INSPECT_GROUP if self.purpose == "inspect" else self.name

    @property
    def instance(self) -> str:
        return f"instances/{self.name}"

    @property
    def inspect_event(self) -> str:
        """inspect --arm's entry event in INSPECT_GROUP (its return probe's: _ret after)."""
        return f"p{self.pid}"

    def member(self, n: int) -> str:
        """Its nth synthetic event (lat) or module probe (bench)."""
        return f"{self.name}_{n}"

    def gone(self, proc: Path) -> bool:
        return not (proc / str(self.pid)).exists()

    def __str__(self) -> str:
        return f"{COMMANDS[self.purpose]} (pid {self.pid})"


WATCH_INSTANCES = "kpctl-watch-*"  # every watch's instance, as a glob


def session_of(name: str, group: str | None = None) -> Session | None:
    """Whose name is: a group, an instance, a synthetic event or a module probe (group:
    an event's group, which tells inspect's events); None for what no session made."""
    if group == INSPECT_GROUP:
        m = _INSPECT_EVENT.match(name)
        return Session("inspect", int(m.group(1))) if m else None
    m = _NAMES.fullmatch(name)
    if m is None:
        return None
    if m["inspect"]:
        return Session("inspect", int(m["inspect"]))
    if m["watch"]:
        return Session("watch", int(m["watch"]))
    return Session(m["purpose"], int(m["pid"]))
