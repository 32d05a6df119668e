#!/usr/bin/env python3
"""What counting costs per hit with each engine, beside streaming the same probe, and
how long `kpctl count` takes to count beside bcc's funccount.

Run as root in a guest, at the checkout's root:
    python3 guest/harness.py run --arch x86_64 --kernel 6.1 -- python3 bench/counting.py

1. A loop of getppid() calls, unprobed and then under `kpctl count` through each engine
   (bpf: kpctl's own programs, bcc, tracefs) and `kpctl trace` (streaming every hit to
   /dev/null): ns per call, and ns per hit above the unprobed loop. The aim: every
   counting engine costs less per hit than streaming.
2. From starting `kpctl count PATTERN -i 1` through each engine to its first table (best
   of three),
   beside funccount-bpfcc, on vfs_read and on 'vfs_r*' (which funccount can attach in
   full). The aim: kpctl's bpf engine within a third of funccount's time.
3. Start-up of `kpctl count vfs_read --engine bpf`: from exec to "counting ... Ctrl-C
   ends" (the probe armed), beside `python3 -c pass` and kpctl's imports alone.
4. Arming the bpf engine on 1,000 functions (of '*_show': sysfs readers, rarely called)
   through one kprobe_multi link and one perf kprobe at a time. The aim, where the
   kernel has the link (CONFIG_FPROBE): 10 x faster.
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
ENGINES = ("bpf", "bcc", "tracefs")


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


def arming_s(functions: list[str], together: bool) -> tuple[float, str]:
    """Seconds to arm the bpf engine's counting on functions (and disarm it: not timed)."""
    sys.path.insert(0, str(CHECKOUT))
    from kpctl.aggregation.bpf import BpfHitCounter
    from kpctl.tracefs import Tracefs, find_tracefs

    counter = BpfHitCounter(Tracefs(find_tracefs()), functions, together=together)
    began = time.perf_counter()
    with counter.counting():
        armed = time.perf_counter() - began
    return armed, counter.attachment


def many_functions(how_many: int) -> list[str]:
    sys.path.insert(0, str(CHECKOUT))
    from kpctl.tracefs import Tracefs, find_tracefs

    symbols = Tracefs(find_tracefs()).symbols
    kept, _ = symbols.probeable_matches("*_show")
    traceable = symbols.traceable or frozenset()
    # A name kallsyms has twice (a function, or a function and data) is refused by the
    # kprobe PMU (EADDRNOTAVAIL): unique ones only.
    return sorted(f for f in kept if f in traceable and len(symbols.by_name.get(f, ())) == 1)[:how_many]


def ready_s(argv: list[str], ready: str | None, runs: int = 3) -> float:
    """Median seconds from starting argv to ready on its stderr (None: to its exit)."""
    def once() -> float:
        began = time.perf_counter()
        if ready is None:
            subprocess.run(argv, cwd=CHECKOUT, check=True)
            return time.perf_counter() - began
        proc = started(argv, ready)
        took = time.perf_counter() - began
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=300)
        return took

    return statistics.median(once() for _ in range(runs))


def best_first_table_s(argv: list[str], first: str, runs: int = 3) -> float:
    """The fastest of runs: what a neighbour's load adds is noise, not start-up."""
    return min(first_table_s(argv, first) for _ in range(runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20000, help="getppid() calls per run")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    function = syscall_function("getppid")
    base = [loop_ns(args.calls) for _ in range(args.runs)]
    rows = [("unprobed", base)]
    for engine in ENGINES:
        rows.append((f"count --engine {engine}",
                     under([*KPCTL, "count", function, "--engine", engine], "Ctrl-C ends", args.calls, args.runs)))
    rows.append(("trace (streaming)", under([*KPCTL, "trace", function, "--json"], "Ctrl-C ends", args.calls, args.runs)))
    unprobed = statistics.median(base)
    print(f"{args.calls} getppid() calls, median of {args.runs} runs; probe on {function}")
    print(f"{'mechanism':<26}{'ns/call':>10}{'spread':>10}{'ns/hit above unprobed':>24}")
    for name, times in rows:
        median = statistics.median(times)
        print(f"{name:<26}{median:>10.0f}{max(times) - min(times):>10.0f}{median - unprobed:>24.0f}")
    for pattern in ("vfs_read", "vfs_r*"):
        try:
            funccount: float | None = best_first_table_s(["funccount-bpfcc", "-i", "1", pattern], "FUNC")
        except NoTable as e:
            funccount = None
            print(f"funccount-bpfcc '{pattern}' failed: {e}")
        times = {engine: best_first_table_s([*KPCTL, "count", pattern, "-i", "1", "--engine", engine], "FUNCTION")
                 for engine in ENGINES}
        shown = ", ".join(f"{engine} {t:.2f} s" for engine, t in times.items())
        versus = f", funccount-bpfcc {funccount:.2f} s; bpf/funccount {times['bpf'] / funccount:.2f}" if funccount else ""
        print(f"first table of count '{pattern}' -i 1: {shown}{versus}")
    functions = many_functions(1000)
    together, how = arming_s(functions, True)
    one_by_one, _ = arming_s(functions, False)
    bare = ready_s([sys.executable, "-c", "pass"], None)
    imports = ready_s([sys.executable, "-c", "import kpctl.cli.main, kpctl.aggregation.bpf, kpctl.gc"], None)
    counting = ready_s([*KPCTL, "count", "vfs_read", "--engine", "bpf"], "Ctrl-C ends")
    print(f"start-up of count vfs_read --engine bpf to its probe armed: {counting:.2f} s; python3 -c pass {bare:.2f} s, "
          f"kpctl's imports {imports - bare:.2f} s more")
    print(f"arming {len(functions)} functions: {how} {together:.2f} s, one perf kprobe at a time {one_by_one:.2f} s; "
          f"ratio {one_by_one / together:.1f}")

if __name__ == "__main__":
    main()
