"""What the counting commands count, whichever engine keeps the counts, and how they are
shown: tables, power-of-two histograms as bcc prints them, flame-graph input and
Prometheus metrics. Pure: no I/O."""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from kpctl.errors import UsageError
from kpctl.metrics import Metric
from kpctl.model import Comm, FetchArg, parse_fetch_arg, parse_target, printed_value

# What --by names besides a fetch argument.
SPLITS = ("pid", "comm", "cpu", "stack")
UNITS = {"nsecs": 1, "usecs": 1000, "msecs": 1000_000}  # latency's units, in ns


@dataclass(frozen=True)
class Count:
    function: str
    key: str | None  # what --by split the hits by, or a "~ 2^k" bucket; None: all of the function's hits
    hits: int
    split: str | None = None  # latency's --by key (its key is the bucket)


class Aggregation(Protocol):
    """Counts kept in the kernel by one engine."""
    engine: str

    def counting(self) -> AbstractContextManager[None]:
        """Counting for the block; nothing of it is left afterwards."""

    def counts(self) -> tuple[list[Count], int]:
        """The counts so far, biggest first, and how many hits full tables dropped."""


def split_by(by: str | None) -> str | FetchArg | None:
    """--by as one of SPLITS, a named fetch argument, or None (not split)."""
    if by is None or by in SPLITS:
        return by
    arg = parse_fetch_arg(by)
    if arg.name is None:
        raise UsageError(f"--by {by}: a fetch argument to count by needs a name", "for example: --by 'size=$arg3:u64'")
    return arg


def histogram_split(fetcharg: str) -> FetchArg:
    """hist's FETCHARG, the number its buckets are of: NAME=FETCH[:TYPE]."""
    example = "for example: kpctl hist vfs_read 'size=$arg3:u64'"
    if fetcharg in SPLITS:
        raise UsageError(f"a histogram needs a numeric fetch argument, not {fetcharg}", example)
    arg = parse_fetch_arg(fetcharg)
    if arg.name is None:
        raise UsageError(f"FETCHARG {fetcharg}: a histogram's fetch argument needs a name, NAME=FETCH[:TYPE]", example)
    return arg


def plain_functions(functions: Sequence[str], engine: str) -> list[str]:
    """functions, each a plain name (BPF engines attach by name), none twice."""
    for function in functions:
        target = parse_target(function)[0]
        if target.symbol is None or target.module or target.offset:
            raise UsageError(f"the {engine} engine probes functions by name, not {function}")
    if len(set(functions)) < len(functions):
        raise UsageError("a function is given twice")
    return list(functions)


def counts_of(functions: Sequence[str], keys: Iterable[tuple[int, int, int, str, int]], split: str | FetchArg | None,
              bucketed: bool, stack_text: Callable[[int], str]) -> list[Count]:
    """A BPF engine's map as counts, biggest first. keys: (probe, log2 slot, --by value,
    comm, hits) per entry; stack_text names a stack id's frames."""
    found: list[Count] = []
    for probe, slot, value, comm, hits in keys:
        by = _key_text(value, comm, split, stack_text)
        if bucketed:
            found.append(Count(functions[probe], f"~ 2^{slot}", hits, by))
        else:
            found.append(Count(functions[probe], by, hits))
    if split is None and not bucketed:  # every function has a row, as with hist triggers
        totals = dict.fromkeys(functions, 0)
        for c in found:
            totals[c.function] += c.hits
        found = [Count(f, None, n) for f, n in totals.items()]
    return biggest_first(found)


def _key_text(value: int, comm: str, split: str | FetchArg | None, stack_text: Callable[[int], str]) -> str | None:
    if split is None:
        return None
    if split == "pid":
        return f"{comm} {value}"
    if split == "comm" or isinstance(split, FetchArg) and isinstance(split.fetch, Comm):
        return comm
    if split == "stack":
        # A negative id: -EFAULT, or -EEXIST (a hash collision).
        return "[stack lost]" if value >= 1 << 63 else stack_text(value)
    if isinstance(split, FetchArg):
        return printed_value(value, split.type)
    return str(value)


def biggest_first(counts: list[Count]) -> list[Count]:
    return sorted(counts, key=lambda c: (-c.hits, c.function, c.key or "", c.split or ""))


def count_table(counts: Sequence[Count], functions: int, by: str | None,
                top: int | None) -> tuple[list[dict[str, str | int | None]], int]:
    """The rows `kpctl count` shows, the biggest top of those hit (funccount prints no
    zero rows), and how many of the functions counted no hit reached."""
    hit = [c for c in counts if c.hits]
    rows = [{"function": c.function, **({"by": c.key} if by else {}), "hits": c.hits} for c in hit][:top]
    return rows, functions - len({c.function for c in hit})


def since(now: Sequence[Count], before: Sequence[Count]) -> list[Count]:
    """The hits of now that came after before (for -i intervals), biggest first."""
    earlier = {(c.function, c.key, c.split): c.hits for c in before}
    delta = [Count(c.function, c.key, c.hits - earlier.get((c.function, c.key, c.split), 0), c.split) for c in now]
    return biggest_first([c for c in delta if c.hits or c.key is None])


def log2_buckets(counts: Sequence[Count]) -> list[tuple[int, int, int]]:
    """(low, high, hits) per power-of-two bucket from the first to the last with hits,
    empty ones included. The kernel keys a value v by ilog2(roundup_pow_of_two(v)),
    printed ``~ 2^k``: bucket k holds 2^(k-1)+1 .. 2^k (k = 0: 0 and 1)."""
    hits: dict[int, int] = {}
    for c in counts:
        m = re.fullmatch(r"~ 2\^(\d+)", c.key or "")
        if m:
            hits[int(m.group(1))] = hits.get(int(m.group(1)), 0) + c.hits
    if not hits:
        return []
    return [((1 << (k - 1)) + 1 if k else 0, 1 << k, hits.get(k, 0)) for k in range(min(hits), max(hits) + 1)]


def folded(counts: Sequence[Count]) -> list[str]:
    """Stacks as flame-graph input (Brendan Gregg's stackcollapse): root first, frames
    joined by ';', then the count. The kernel prints a stack leaf first."""
    return [f"{';'.join(reversed((c.key or '').split(';')))} {c.hits}" for c in counts]


def render_log2(buckets: Sequence[tuple[int, int, int]], label: str, width: int = 40) -> list[str]:
    """Buckets as bcc's tools print them: range, hits, and a bar scaled to the biggest."""
    most = max((hits for _, _, hits in buckets), default=0)
    span = max(len(str(high)) for _, high, _ in buckets) if buckets else 1
    lines = [f"{label:>{2 * span + 4}} : {'hits':<8} distribution"]
    for low, high, hits in buckets:
        bar = "*" * (round(width * hits / most) if most else 0)
        lines.append(f"{low:>{span}} -> {high:<{span}} : {hits:<8} |{bar:<{width}}|")
    return lines


def count_metric(counts: Sequence[Count], by: str | None, engine: str) -> Metric:
    """Counts as a Prometheus gauge: hits counted while the command ran."""
    def labels(c: Count) -> dict[str, str]:
        return {"function": c.function, **({"by": by or "", "key": c.key} if c.key is not None else {}), "engine": engine}

    return Metric("kpctl_count_hits", "gauge", "Hits of a function counted in the kernel while kpctl count ran.",
                  [(labels(c), c.hits) for c in counts])


def _cumulative(buckets: Sequence[tuple[int, int, int]], labels: Mapping[str, str],
                ) -> tuple[list[tuple[Mapping[str, str], float]], list[str]]:
    """A histogram's samples and their suffixes: cumulative counts per upper bound (le),
    +Inf, and the count (the sum of the values is not known to hist triggers)."""
    samples: list[tuple[Mapping[str, str], float]] = []
    total = 0
    for _, high, hits in buckets:
        total += hits
        samples.append(({**labels, "le": str(high)}, total))
    samples += [({**labels, "le": "+Inf"}, total), (labels, total)]
    return samples, ["_bucket"] * (len(samples) - 1) + ["_count"]


def histogram_metric(buckets: Sequence[tuple[int, int, int]], target: str, fetcharg: str, engine: str) -> Metric:
    """Power-of-two buckets of a fetch argument as a Prometheus histogram."""
    samples, suffixes = _cumulative(buckets, {"target": target, "fetcharg": fetcharg, "engine": engine})
    return Metric("kpctl_hist", "histogram", "Values of a fetch argument, in power-of-two buckets.", samples, suffixes)


def latency_metric(by_function: Mapping[str, Sequence[tuple[int, int, int]]], unit: str, engine: str) -> Metric:
    """Each function's latency buckets as one Prometheus histogram, labelled by function."""
    samples: list[tuple[Mapping[str, str], float]] = []
    suffixes: list[str] = []
    for function, buckets in by_function.items():
        more, kinds = _cumulative(buckets, {"function": function, "unit": unit, "engine": engine})
        samples += more
        suffixes += kinds
    return Metric("kpctl_latency", "histogram", "Time from entry to return, in power-of-two buckets of unit.",
                  samples, suffixes)


def stacks_metric(counts: Sequence[Count], target: str, engine: str) -> Metric:
    """Stack counts as a Prometheus gauge, each stack a label in flame-graph form."""
    return Metric("kpctl_stack_hits", "gauge", "Hits of a function per kernel stack while kpctl stacks ran.",
                  [({"target": target, "stack": stack.rsplit(" ", 1)[0], "engine": engine}, c.hits)
                   for c, stack in zip(counts, folded(counts), strict=True)])
