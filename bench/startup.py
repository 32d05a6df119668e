#!/usr/bin/env python3
"""Cold start of `kpctl --help` and `kpctl list` beside `python3 -c pass`.

The aim: each kpctl command within twice the bare interpreter's time plus 60 ms. `list`
fails fast on a machine without kprobe_events; what is measured is how long kpctl takes
to get going, which is the same either way.

    python3 bench/startup.py [--runs 20]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]


def median_ms(argv: list[str], runs: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(CHECKOUT), "PYTHONDONTWRITEBYTECODE": "1"}
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    runs = parser.parse_args().runs
    bare = median_ms([sys.executable, "-c", "pass"], runs)
    budget = 2 * bare + 60
    print(f"{'command':<24} {'median ms':>10}")
    print(f"{'python3 -c pass':<24} {bare:>10.1f}")
    for args in (["--help"], ["list"]):
        ms = median_ms([sys.executable, "-m", "kpctl", *args], runs)
        verdict = "within" if ms <= budget else "OVER"
        print(f"{'kpctl ' + ' '.join(args):<24} {ms:>10.1f}   {verdict} the aim of {budget:.0f} ms")


if __name__ == "__main__":
    main()
