#!/usr/bin/env python3
"""What counting costs per hit with each engine, beside streaming the same probe, and
how long `kpctl count` takes to count beside bcc's funccount.

Run as root in a guest, at the checkout's root:
    python3 guest/harness.py run --arch x86_64 --kernel 6.1 -- python3 bench/counting.py

1. A loop of getppid() calls, unprobed and then under `kpctl count --engine bpf`,
   `kpctl count --engine tracefs` and `kpctl trace` (streaming every hit to /dev/null):
   ns per call, and ns per hit above the unprobed loop. The aim: both counting engines
   cost less per hit than streaming.
2. From starting `kpctl count 'vfs_*' -i 1` to its first table, beside funccount-bpfcc
   on the same pattern, and on one that funccount can attach in full. The aim: no
   slower than funccount.
Under emulation (TCG) absolute times are not those of hardware: compare the ratios.
"""
from __future__ import annotations

import argparse
import os
import select
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]
KPCTL = [sys.executable, "-m", "kpctl"]


def syscall_function(name: str) -> str:
    symbols = {line.split()[2] for line in Path("/proc/kallsyms").read_text().splitlines() if name in line}
    for prefix in ("__x64_sys_", "__arm64_sys_", "sys_"):
        if prefix + name in symbols:
            return prefix + name
    raise SystemExit(f"no syscall function for {name} in /proc/kallsyms")


def loop_ns(calls: int) -> float:
    started = time.perf_counter_ns()
    for _ in range(calls):
        os.getppid()
    return (time.perf_counter_ns() - started) / calls


def started(argv: list[str], ready: str) -> subprocess.Popen[str]:
    """argv running, once it printed ready on stderr."""
    proc = subprocess.Popen(argv, cwd=CHECKOUT, text=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    for line in proc.stderr:
        if ready in line:
            return proc
    raise SystemExit(f"{' '.join(argv)} ended before it was ready: {proc.wait()}")


def under(argv: list[str], ready: str, calls: int, runs: int) -> list[float]:
    proc = started(argv, ready)
    try:
        return [loop_ns(calls) for _ in range(runs)]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=300)


class NoTable(Exception):
    """The command ended without a table; the message is its last error line."""


def first_table_s(argv: list[str], first: str) -> float:
    """Seconds from starting argv to the first stdout line that starts with first."""
    began = time.perf_counter()
    # funccount prints into a pipe in blocks: unbuffered, it prints each table as it ends.
    proc = subprocess.Popen(argv, cwd=CHECKOUT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stdout is not None
    try:
        while select.select([proc.stdout], [], [], 300)[0]:
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith(first):
                return time.perf_counter() - began
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=300)
    raise NoTable((err.strip().splitlines() or ["no error"])[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20000, help="getppid() calls per run")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    function = syscall_function("getppid")
    base = [loop_ns(args.calls) for _ in range(args.runs)]
    rows = [("unprobed", base)]
    for engine in ("bpf", "tracefs"):
        rows.append((f"count --engine {engine}",
                     under([*KPCTL, "count", function, "--engine", engine], "Ctrl-C ends", args.calls, args.runs)))
    rows.append(("trace (streaming)", under([*KPCTL, "trace", function, "--json"], "Ctrl-C ends", args.calls, args.runs)))
    unprobed = statistics.median(base)
    print(f"{args.calls} getppid() calls, median of {args.runs} runs; probe on {function}")
    print(f"{'mechanism':<26}{'ns/call':>10}{'spread':>10}{'ns/hit above unprobed':>24}")
    for name, times in rows:
        median = statistics.median(times)
        print(f"{name:<26}{median:>10.0f}{max(times) - min(times):>10.0f}{median - unprobed:>24.0f}")
    # funccount attaches every match and stops at the first it cannot (on 6.1 'vfs_*'
    # holds a notrace function); kpctl counts the probeable ones. A narrower pattern
    # both can count compares their start-up.
    for pattern in ("vfs_*", "vfs_r*"):
        kpctl_s = first_table_s([*KPCTL, "count", pattern, "-i", "1"], "FUNCTION")
        try:
            funccount = f"{first_table_s(['funccount-bpfcc', '-i', '1', pattern], 'FUNC'):.1f} s"
        except NoTable as e:
            funccount = f"failed: {e}"
        print(f"first table of '{pattern}' -i 1: kpctl count {kpctl_s:.1f} s, funccount-bpfcc {funccount}")


if __name__ == "__main__":
    main()
