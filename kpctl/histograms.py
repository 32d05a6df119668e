"""Hist triggers (Documentation/trace/histogram.rst): the trigger commands kpctl writes
and the `hist` files the kernel prints, parsed. Pure: no I/O.

A hist file reads::

    # event histogram
    #
    # trigger info: hist:keys=common_pid.execname:vals=hitcount:sort=hitcount:size=2048 [active]
    #

    { common_pid: cat             [       365] } hitcount:          3
    { stacktrace:
             vfs_read+0x5/0x1a0
             ksys_read+0x6b/0xf0
    } hitcount:          5

    Totals:
        Hits: 8
        Entries: 2
        Dropped: 0
"""
from __future__ import annotations

import re
from dataclasses import dataclass

# What `--by` names, as a hist key, and the fetch argument the probe needs for it.
BY_KEYS: dict[str, tuple[str, str | None]] = {
    "pid": ("common_pid.execname", None),
    "comm": ("comm", "comm=$comm:string"),
    "cpu": ("cpu", None),
    "stack": ("stacktrace", None),
}
# Without --by, counts are kept per CPU and summed: every hist needs a key.
TOTAL_KEY = "cpu"

_ENTRY = re.compile(r"^\{ (?P<key>.*?)\s*\} hitcount:\s*(?P<count>\d+)", re.M | re.S)
_FIELD = re.compile(r"^(?P<name>[\w.]+): *(?P<value>.*)\Z", re.S)
_PID = re.compile(r"^(?P<comm>.*?)\s*\[\s*(?P<pid>\d+)\]\Z")
_DROPPED = re.compile(r"^\s*Dropped: (\d+)$", re.M)


@dataclass(frozen=True)
class HistEntry:
    key: str  # as kpctl shows it: "cat 365", "1", "vfs_read+0x5;ksys_read+0x6b"
    count: int


def trigger(key: str) -> str:
    """The hist trigger that counts hits per key."""
    return f"hist:keys={key}:vals=hitcount:sort=hitcount.descending:size=8192"


def parse_hist(text: str) -> tuple[list[HistEntry], int]:
    """The entries of a hist file, and how many hits its full table dropped."""
    entries = []
    for m in _ENTRY.finditer(text):
        field = _FIELD.match(m["key"].strip())
        value = field["value"] if field else m["key"].strip()
        # "common_stacktrace" on newer kernels (seen on 6.12), "stacktrace" on 6.1.
        if field and field["name"] in ("stacktrace", "common_stacktrace"):
            value = ";".join(frame.split("/", 1)[0] for frame in value.split())
        elif pid := _PID.match(value):
            value = f"{pid['comm']} {pid['pid']}"
        entries.append(HistEntry(value.strip(), int(m["count"])))
    dropped = _DROPPED.search(text)
    return entries, int(dropped.group(1)) if dropped else 0
