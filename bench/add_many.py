#!/usr/bin/env python3
"""500 probes: one `kpctl add` against one raw batched write of the same lines.

Run as root in a guest, at the checkout's root:
    python3 guest/harness.py run --arch x86_64 --kernel 6.1 -- python3 bench/add_many.py

Both sides define the probes disabled (the raw write enables nothing either) and are
timed without process start-up: kpctl's library call against os.write of all lines at
once. The aim is at most 1.2 times the raw write.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kpctl.backends.tracefs import TracefsBackend  # noqa: E402
from kpctl.model import Probe, Target, format_probe  # noqa: E402
from kpctl.tracefs import Tracefs, find_tracefs  # noqa: E402

# Ordinary kernel functions: a disabled probe on them is never armed, and any of them may go.
_FAMILIES = ("vfs_", "do_", "ext4_", "filemap_", "page_", "generic_", "ksys_", "kernel_", "path_", "inode_", "file_", "d_")


def pick_functions(tracefs: Tracefs, count: int) -> list[str]:
    """Functions a probe can surely sit on: unique, traceable, not blacklisted, in vmlinux."""
    symbols = tracefs.symbols
    chosen = []
    for name in sorted(symbols.traceable or ()):
        if name.startswith(_FAMILIES) and name.isidentifier():
            status = symbols.status(name)
            if status.probeable and not status.reason and status.module is None:
                chosen.append(name)
        if len(chosen) == count:
            return chosen
    raise SystemExit(f"only {len(chosen)} suitable functions found")


def timed_raw_write(tracefs: Tracefs, writes: list[str]) -> float:
    fd = os.open(tracefs.path("kprobe_events"), os.O_WRONLY | os.O_APPEND)
    try:
        started = time.perf_counter()
        for data in writes:
            os.write(fd, data.encode())
        return time.perf_counter() - started
    finally:
        os.close(fd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=500)
    count = parser.parse_args().count
    tracefs = Tracefs(find_tracefs())
    names = pick_functions(tracefs, count)
    probes = [Probe("p", Target(n), event=n, group="kpctlbench") for n in names]

    backend = TracefsBackend(tracefs, group="kpctlbench")
    started = time.perf_counter()
    backend.add(probes, enable=False)
    kpctl_s = time.perf_counter() - started
    backend.remove_all()

    lines = [format_probe(p) for p in probes]
    raw_s = timed_raw_write(tracefs, ["".join(f"{line}\n" for line in lines)])
    backend.remove_all()
    # The same lines, one write(2) each as kpctl writes them: what is left of kpctl's
    # time beyond this is Python's own.
    per_line_s = timed_raw_write(tracefs, [f"{line}\n" for line in lines])
    backend.remove_all()

    print(
        f"{count} probes: kpctl add {kpctl_s:.3f} s, raw batched write {raw_s:.3f} s, "
        f"ratio {kpctl_s / raw_s:.2f} (aim <= 1.2); raw one write per line {per_line_s:.3f} s"
    )


if __name__ == "__main__":
    main()
