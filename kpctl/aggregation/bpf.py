"""The bpf engine of `kpctl count`, `hist`, `latency` and `stacks`: kpctl's own BPF
programs (kpctl/ebpf/programs.py), written as instructions, loaded and attached through
system calls: no compiler, no kernel headers, no bcc on the traced machine, and counting
starts in milliseconds instead of seconds of LLVM.

Every hit lands in one hash keyed by probe, log2 bucket and the --by value, as in the
bcc engine; a full hash drops the hit and counts it. Maps, programs, perf events and
links are file descriptors of this process: they go when it exits, SIGKILL included,
and nothing is written to tracefs.

Several functions attach through one kprobe_multi link where the kernel has one
(CONFIG_FPROBE), one perf kprobe each otherwise or when the link is refused; one
function always gets a perf kprobe, which debug/kprobes/list shows.
"""
from __future__ import annotations

import os
import struct
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager

from kpctl.aggregation.counts import UNITS, Count, counts_of, histogram_split, plain_functions, split_by
from kpctl.ebpf.asm import GET_ATTACH_COOKIE, MOV, R0, Item, alu64, assemble, call, exit_
from kpctl.ebpf.programs import (
    CALL_SIZE,
    FRAME_SIZE,
    KEY_FORMAT,
    MAX_STACK,
    CountMaps,
    LatencyMaps,
    Split,
    count_program,
    decode_key,
    latency_entry,
    latency_return,
    this_arch,
)
from kpctl.ebpf.syscalls import (
    ARRAY,
    ATTACH_KPROBE_MULTI,
    HASH,
    STACK_TRACE,
    BpfError,
    Map,
    allow_descriptors,
    attach_kprobe_multi,
    attach_perf_event,
    kprobe_pmu_type,
    load_program,
    open_kprobe,
    supported_machine,
)
from kpctl.errors import UsageError
from kpctl.model import FetchArg, ReturnValue
from kpctl.registry import Availability
from kpctl.tracefs import Tracefs

ENGINE = "bpf"
TABLE_SIZE = 10240  # entries of each hash, as bcc's default

MULTI_LINK, PERF_KPROBES = "one kprobe_multi link", "a perf kprobe each"


def _attach(stack: ExitStack, name: str, program: list[Item], functions: Sequence[str], is_return: bool,
            multi: bool) -> str:
    """program on every function, each attachment's cookie its index; every fd closed
    by stack. How it attached: MULTI_LINK or PERF_KPROBES."""
    code = assemble(program)
    if multi and len(functions) > 1:
        with ExitStack() as multi_stack:
            try:
                prog = load_program(code, name, ATTACH_KPROBE_MULTI)
                multi_stack.callback(os.close, prog)
                multi_stack.callback(os.close, attach_kprobe_multi(prog, functions, is_return))
                stack.push(multi_stack.pop_all())
                return MULTI_LINK
            except BpfError:
                pass  # no CONFIG_FPROBE, or a function fprobe cannot take: one kprobe each, this program closed
    prog = load_program(code, name)
    stack.callback(os.close, prog)
    allow_descriptors(len(functions))
    for index, function in enumerate(functions):
        stack.callback(os.close, attach_perf_event(prog, open_kprobe(function, is_return), index))
    return PERF_KPROBES


class _Counts:
    """The counts hash, the dropped counter and (for --by stack) the stacks of one
    command, read into Counts."""

    def __init__(self, stack: ExitStack, split: Split) -> None:
        def opened(m: Map) -> Map:
            stack.callback(m.close)
            return m

        self.counts = opened(Map(HASH, struct.calcsize(KEY_FORMAT), 8, TABLE_SIZE, "kpctl_counts"))
        self.dropped = opened(Map(ARRAY, 4, 8, 1, "kpctl_dropped"))
        self.stacks = opened(Map(STACK_TRACE, 4, 8 * MAX_STACK, TABLE_SIZE, "kpctl_stacks")) if split == "stack" else None
        self.fds = CountMaps(self.counts.fd, self.dropped.fd, self.stacks.fd if self.stacks else None)

    def read(self, functions: Sequence[str], split: Split, bucketed: bool,
             namer: Callable[[int], str | None]) -> tuple[list[Count], int]:
        def stack_text(stack_id: int) -> str:
            assert self.stacks is not None
            raw = self.stacks.lookup(struct.pack("<I", stack_id)) or b""
            frames = [a for a in struct.unpack(f"<{len(raw) // 8}Q", raw) if a]
            return ";".join(namer(a) or f"{a:#x}" for a in frames)

        keys = (decode_key(k) + (struct.unpack("<Q", v)[0],) for k, v in self.counts.items())
        found = counts_of(functions, keys, split, bucketed, stack_text)
        dropped = self.dropped.lookup(struct.pack("<I", 0))
        return found, struct.unpack("<Q", dropped)[0] if dropped else 0


class _Engine(ABC):
    """What both kinds of counting share: the maps made, the programs attached for the
    block, the counts read meanwhile."""
    engine = ENGINE

    def __init__(self, tracefs: Tracefs, functions: Sequence[str], split: Split, bucketed: bool,
                 together: bool) -> None:
        self.tracefs = tracefs
        self.together = together  # one kprobe_multi link for several functions, where the kernel has it
        self.attachment = ""  # how the last counting() attached: MULTI_LINK or PERF_KPROBES
        self.functions = plain_functions(functions, ENGINE)
        self.split = split
        self.bucketed = bucketed
        self.arch = this_arch()
        self._counts: _Counts | None = None
        self._namer: Callable[[int], str | None] = lambda address: None

    @abstractmethod
    def _programs(self, stack: ExitStack, counts: CountMaps) -> str:
        """Load and attach the programs that count into counts, each fd closed by stack;
        how they attached."""

    @contextmanager
    def _counting(self) -> Iterator[None]:
        with ExitStack() as stack:
            counts = _Counts(stack, self.split)
            self.attachment = self._programs(stack, counts.fds)
            if self.split == "stack":  # kallsyms read once, now, not at every interval's table
                self._namer = self.tracefs.symbols.namer()
            self._counts = counts
            try:
                yield
            finally:
                self._counts = None

    def counting(self) -> AbstractContextManager[None]:
        return self._counting()

    def counts(self) -> tuple[list[Count], int]:
        if self._counts is None:
            return [], 0
        return self._counts.read(self.functions, self.split, self.bucketed, self._namer)


class BpfHitCounter(_Engine):
    """Hits of functions counted in a BPF map, split by one key or not; with log2, an
    argument's values in power-of-two buckets. $retval makes return probes."""

    def __init__(self, tracefs: Tracefs, functions: Sequence[str], by: str | None = None, log2: bool = False,
                 together: bool = True) -> None:
        split = histogram_split(by or "") if log2 else split_by(by)
        self.is_return = isinstance(split, FetchArg) and isinstance(split.fetch, ReturnValue)
        # A histogram's key is its bucket: the value itself is not kept.
        super().__init__(tracefs, functions, None if log2 else split, log2, together)
        self._program: Callable[[CountMaps], list[Item]] = lambda maps: count_program(
            maps, split, log2, self.is_return, self.arch)
        self._program(CountMaps(0, 0, 0))  # what this engine cannot fetch is refused now, before any probe

    def _programs(self, stack: ExitStack, counts: CountMaps) -> str:
        # Stacks through fprobe's partial registers are not the ones kprobes give: one kprobe each.
        return _attach(stack, "kpctl_count", self._program(counts), self.functions, self.is_return,
                       multi=self.together and self.split != "stack")


class BpfLatencyTimer(_Engine):
    """Time from entry to return of each call, in power-of-two buckets of unit, per
    function and the --by key."""

    def __init__(self, tracefs: Tracefs, functions: Sequence[str], unit: str = "nsecs", by: str | None = None,
                 together: bool = True) -> None:
        split = split_by(by)
        if isinstance(split, FetchArg) or split == "stack":
            raise UsageError(f"latency splits by pid, comm or cpu, not {by}")
        super().__init__(tracefs, functions, split, True, together)
        self.unit_ns = UNITS[unit]

    def _programs(self, stack: ExitStack, counts: CountMaps) -> str:
        depth = Map(HASH, CALL_SIZE, 4, TABLE_SIZE, "kpctl_depth")
        stack.callback(depth.close)
        start = Map(HASH, FRAME_SIZE, 8, TABLE_SIZE, "kpctl_start")
        stack.callback(start.close)
        maps = LatencyMaps(depth.fd, start.fd)
        # Return probes first: a call already running when its entry probe arms is then
        # not timed (its return finds no entry), rather than timed from a later entry.
        _attach(stack, "kpctl_return", latency_return(maps, counts, self.split, self.unit_ns, self.arch),
                self.functions, True, self.together)
        return _attach(stack, "kpctl_entry", latency_entry(maps), self.functions, False, self.together)


def availability() -> Availability:
    """Whether kpctl's programs load and attach here: the machine, the kprobe PMU, and a
    program that reads its cookie, loaded (the kernel's own answer: v5.15 and root)."""
    if not supported_machine():
        return Availability(False, f"kpctl's BPF programs are written for x86_64 and aarch64, not {os.uname().machine}",
                            "use --engine bcc or --engine tracefs")
    if kprobe_pmu_type() is None:
        return Availability(False, "this kernel has no kprobe PMU (/sys/bus/event_source/devices/kprobe)",
                            "the kernel needs CONFIG_KPROBE_EVENTS=y and CONFIG_BPF_EVENTS=y")
    try:
        os.close(load_program(assemble([call(GET_ATTACH_COOKIE), alu64(MOV, R0, imm=0), exit_()]), "kpctl_check"))
    except BpfError as e:
        return Availability(False, str(e), e.hint or "the kernel needs CONFIG_BPF_SYSCALL=y and CONFIG_BPF_EVENTS=y")
    return Availability(True, "BPF programs on perf kprobes")
