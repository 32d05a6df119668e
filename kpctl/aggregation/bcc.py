"""The bcc engine of `kpctl count`, `hist`, `latency` and `stacks`: one BPF program
compiled by bcc whose kprobes count into BPF maps (as bcc's funccount, argdist -H,
funclatency and stackcount do). Programs and maps belong to this process: they go when
it exits, SIGKILL included, and nothing is written to tracefs.

Every hit lands in one hash, keyed by probe, log2 bucket and the --by value; a full
hash drops the hit and counts it. Latency keeps each thread's entry times per function
and call depth, so nested and recursive calls are each timed from their own entry.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from kpctl.aggregation.counts import UNITS, Count, counts_of, histogram_split, plain_functions, split_by
from kpctl.backends.bpf import fetch_expression
from kpctl.bcc_glue import compile_program
from kpctl.errors import KpctlError, UsageError
from kpctl.model import FetchArg, ReturnValue

ENGINE = "bcc"
TABLE_SIZE = 10240  # bcc's default for a hash

_HEAD = """
#include <uapi/linux/ptrace.h>
struct kpctl_key {
    u32 probe;
    u32 slot;       /* a log2 bucket: hist, latency */
    u64 value;      /* what --by splits by: a tid, a cpu, a stack id, an argument */
    char comm[16];
};
BPF_HASH(kpctl_counts, struct kpctl_key, u64, %(size)d);
BPF_ARRAY(kpctl_dropped, u64, 1);

/* The bucket of v as hist triggers' .log2 keys it: ilog2(roundup_pow_of_two(v)). */
static inline u32 kpctl_log2_up(u64 v) {
    return v <= 1 ? 0 : bpf_log2l(v - 1);
}

static inline void kpctl_count(struct kpctl_key *key) {
    u64 zero = 0, *n = kpctl_counts.lookup_or_try_init(key, &zero);
    if (n) {
        __sync_fetch_and_add(n, 1);
        return;
    }
    u32 first = 0;
    u64 *dropped = kpctl_dropped.lookup(&first);
    if (dropped)
        __sync_fetch_and_add(dropped, 1);
}
"""

# Only where stacks are counted: the map preallocates TABLE_SIZE stacks of up to 127
# frames (perf_event_max_stack), about 10 MB of kernel memory.
_STACKS = """
BPF_STACK_TRACE(kpctl_stacks, %(size)d);
"""


def _head(split: object) -> str:
    return _HEAD % {"size": TABLE_SIZE} + (_STACKS % {"size": TABLE_SIZE} if split == "stack" else "")


_COUNT = """
int kpctl_probe_%(n)d(struct pt_regs *ctx) {
    struct kpctl_key key = {};
    key.probe = %(n)d;
%(key)s
    kpctl_count(&key);
    return 0;
}
"""

_LATENCY_HEAD = """
struct kpctl_call { u32 tid; u32 probe; };
struct kpctl_frame { u32 tid; u32 probe; u32 depth; u32 pad; };
BPF_HASH(kpctl_depth, struct kpctl_call, u32, %(size)d);
BPF_HASH(kpctl_start, struct kpctl_frame, u64, %(size)d);
"""

_LATENCY = """
int kpctl_entry_%(n)d(struct pt_regs *ctx) {
    struct kpctl_call call = {(u32)bpf_get_current_pid_tgid(), %(n)d};
    u32 zero = 0, *depth = kpctl_depth.lookup_or_try_init(&call, &zero);
    if (!depth)
        return 0;
    struct kpctl_frame frame = {call.tid, %(n)d, *depth, 0};
    u64 now = bpf_ktime_get_ns();
    kpctl_start.update(&frame, &now);
    *depth += 1;
    return 0;
}

int kpctl_return_%(n)d(struct pt_regs *ctx) {
    u64 now = bpf_ktime_get_ns();
    struct kpctl_call call = {(u32)bpf_get_current_pid_tgid(), %(n)d};
    u32 *depth = kpctl_depth.lookup(&call);
    if (!depth || *depth == 0)
        return 0;  /* entered before the entry probe was attached */
    u32 inner = *depth - 1;
    *depth = inner;
    struct kpctl_frame frame = {call.tid, %(n)d, inner, 0};
    u64 *start = kpctl_start.lookup(&frame);
    if (!start)
        return 0;
    u64 elapsed = (now - *start) / %(unit)d;
    kpctl_start.delete(&frame);
    if (inner == 0)
        kpctl_depth.delete(&call);
    struct kpctl_key key = {};
    key.probe = %(n)d;
    key.slot = kpctl_log2_up(elapsed);
%(key)s
    kpctl_count(&key);
    return 0;
}
"""

_SPLITS = {
    None: "",
    "pid": "    key.value = (u32)bpf_get_current_pid_tgid();\n    bpf_get_current_comm(&key.comm, sizeof(key.comm));",
    "comm": "    bpf_get_current_comm(&key.comm, sizeof(key.comm));",
    "cpu": "    key.value = bpf_get_smp_processor_id();",
    "stack": "    key.value = (u64)(s64)kpctl_stacks.get_stackid(ctx, 0);",
}


class _Program:
    """A compiled program and its probes (function, BPF function, return or not)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.bpf: Any = None
        self.probes: list[tuple[str, str, bool]] = []

    @contextmanager
    def attached(self) -> Iterator[None]:
        self.bpf = compile_program(self.text)
        try:
            for function, bpf_function, is_return in self.probes:
                attach = self.bpf.attach_kretprobe if is_return else self.bpf.attach_kprobe
                try:
                    attach(event=function, fn_name=bpf_function)
                except Exception as e:  # bcc: "Failed to attach BPF program ... to kprobe ..."
                    raise KpctlError(f"the kernel refused a BPF probe on {function}: {e}") from None
            yield
        finally:
            self.bpf.cleanup()  # detaches every probe, closes every map

    def counts(self, functions: Sequence[str], split: str | FetchArg | None, bucketed: bool) -> tuple[list[Count], int]:
        if self.bpf is None:
            return [], 0

        def stack_text(stack_id: int) -> str:
            frames = self.bpf["kpctl_stacks"].walk(stack_id)
            return ";".join(self.bpf.ksym(a, show_offset=True).decode(errors="replace") for a in frames)

        keys = ((k.probe, k.slot, k.value, k.comm.decode(errors="replace"), v.value)
                for k, v in self.bpf["kpctl_counts"].items())
        dropped = self.bpf["kpctl_dropped"]
        return (counts_of(functions, keys, split, bucketed, stack_text),
                int(dropped[dropped.Key(0)].value))


def _split_statements(split: str | FetchArg | None, is_return: bool) -> str:
    if not isinstance(split, FetchArg):
        return _SPLITS[split]
    expression = fetch_expression(split, is_return)
    if expression is None:  # $comm
        return _SPLITS["comm"]
    return f"    key.value = {expression};"


class BccHitCounter:
    """Hits of functions counted in a BPF map, split by one key or not; with log2, an
    argument's values in power-of-two buckets. $retval makes return probes."""
    engine = ENGINE

    def __init__(self, functions: Sequence[str], by: str | None = None, log2: bool = False) -> None:
        self.functions = plain_functions(functions, ENGINE)
        self.split = histogram_split(by or "") if log2 else split_by(by)
        self.log2 = log2
        is_return = isinstance(self.split, FetchArg) and isinstance(self.split.fetch, ReturnValue)
        key = _split_statements(self.split, is_return)
        if log2:
            key += "\n    key.slot = kpctl_log2_up(key.value);\n    key.value = 0;"
        self.program = _Program(_head(self.split) + "".join(
            _COUNT % {"n": n, "key": key} for n in range(len(self.functions))))
        self.program.probes = [(f, f"kpctl_probe_{n}", is_return) for n, f in enumerate(self.functions)]

    def counting(self) -> AbstractContextManager[None]:
        return self.program.attached()

    def counts(self) -> tuple[list[Count], int]:
        # A histogram's key is its bucket: the value itself is not kept.
        return self.program.counts(self.functions, None if self.log2 else self.split, bucketed=self.log2)


class BccLatencyTimer:
    """Time from entry to return of each call, in power-of-two buckets of unit, per
    function and the --by key."""
    engine = ENGINE

    def __init__(self, functions: Sequence[str], unit: str = "nsecs", by: str | None = None) -> None:
        self.functions = plain_functions(functions, ENGINE)
        self.split = split_by(by)
        if isinstance(self.split, FetchArg) or self.split == "stack":
            raise UsageError(f"latency splits by pid, comm or cpu, not {by}")
        key = _split_statements(self.split, True)
        self.program = _Program(_head(self.split) + _LATENCY_HEAD % {"size": TABLE_SIZE} + "".join(
            _LATENCY % {"n": n, "unit": UNITS[unit], "key": key} for n in range(len(self.functions))))
        # Return probes first: a call already running when its entry probe arms is then
        # not timed (its return finds no entry), rather than timed from a later entry.
        self.program.probes = [(f, f"kpctl_return_{n}", True) for n, f in enumerate(self.functions)] + [
            (f, f"kpctl_entry_{n}", False) for n, f in enumerate(self.functions)]

    def counting(self) -> AbstractContextManager[None]:
        return self.program.attached()

    def counts(self) -> tuple[list[Count], int]:
        return self.program.counts(self.functions, self.split, bucketed=True)
