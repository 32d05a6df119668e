#!/usr/bin/env python3
"""How fast `kpctl watch` turns trace_pipe text into output, per recorded kernel.

Feeds the trace_pipe text captured from real guests (tests/host/data/<arch>-<kernel>/,
entry and return probes with several typed arguments) through the parser alone and
through HitStream, the exact parse + filter + format path watch uses, for text and for
--json output. Prints lines per second, and each output's rate as a share of the
parser's in the same run (the machine's load moves all three). Aims: parsing 1,000,000
lines/s, text output 1,000,000, --json output 500,000.

    python3 bench/watch_parse.py [--repeat 200]
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kpctl.hits import HitStream, hit_matches  # noqa: E402
from kpctl.model import Probe, parse_probe  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "tests" / "host" / "data"


class Discard:
    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


def whole_line_chunks(text: str, size: int = 65536) -> list[str]:
    """text cut as watch reads trace_pipe: up to 64 KiB, whole lines each."""
    chunks, start = [], 0
    while start < len(text):
        end = text.rfind("\n", start, start + size) + 1 or len(text)
        chunks.append(text[start:end])
        start = end
    return chunks


def best_rates(lines: int, runs: list[Callable[[], None]], rounds: int = 5) -> list[float]:
    """Lines per second of each run's fastest round: the others measured the machine's
    load. The runs take turns in each round, so that a ratio of two compares like with like."""
    best = [float("inf")] * len(runs)
    for _ in range(rounds):
        for i, run in enumerate(runs):
            started = time.perf_counter()
            run()
            best[i] = min(best[i], time.perf_counter() - started)
    return [lines / b for b in best]


def parse(text: str) -> None:
    for _ in hit_matches(text):
        pass


def output(chunks: list[str], probes: list[Probe], as_json: bool) -> None:
    stream = HitStream(Discard(), probes, as_json=as_json)
    for chunk in chunks:
        stream.feed(chunk)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=200, help="copies of the recording per round")
    args = parser.parse_args()
    print(f"{'recording':<16} {'lines':>8} {'parse/s':>12} {'text/s':>12} {'json/s':>12} {'text/parse':>10} {'json/parse':>10}")
    for capture in sorted(p for p in DATA.iterdir() if (p / "trace_pipe").exists()):
        probes = [parse_probe(line) for line in (capture / "kprobe_events").read_text().splitlines()]
        text = (capture / "trace_pipe").read_text() * args.repeat
        lines = text.count("\n")
        chunks = whole_line_chunks(text)

        rates = best_rates(lines, [
            partial(parse, text),
            partial(output, chunks, probes, as_json=False),
            partial(output, chunks, probes, as_json=True),
        ])
        parse_rate, text_rate, json_rate = rates
        print(f"{capture.name:<16} {lines:>8} " + " ".join(f"{r:>12,.0f}" for r in rates)
              + f" {text_rate / parse_rate:>10.2f} {json_rate / parse_rate:>10.2f}")


if __name__ == "__main__":
    main()
