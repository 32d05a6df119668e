"""The counting engine's programs, as instructions: a count per probe and --by key, a
log2 histogram of a fetch argument, and latency with per-thread entry times by call
depth (what kpctl's bcc programs did in C, in aggregation/bcc.py). Pure: map file
descriptors in, instructions out.

One program serves every function of a command: each attachment carries its probe's
index as the BPF cookie, which the program reads (bpf_get_attach_cookie()).
"""
from __future__ import annotations

import os
import struct
from typing import NamedTuple

from kpctl.ebpf.asm import (
    ADD,
    AND,
    DIV,
    GET_ATTACH_COOKIE,
    GET_CURRENT_COMM,
    GET_CURRENT_PID_TGID,
    GET_SMP_PROCESSOR_ID,
    GET_STACKID,
    JEQ,
    JLE,
    JNE,
    KTIME_GET_NS,
    MAP_DELETE_ELEM,
    MAP_LOOKUP_ELEM,
    MAP_UPDATE_ELEM,
    MOV,
    PROBE_READ_KERNEL,
    PROBE_READ_USER,
    R0,
    R1,
    R2,
    R3,
    R4,
    R6,
    R7,
    R8,
    R9,
    R10,
    RSH,
    SUB,
    Item,
    Label,
    alu64,
    atomic_add,
    call,
    exit_,
    jump,
    load,
    load_imm64,
    load_map,
    mov32,
    store,
    store_imm,
)
from kpctl.errors import UsageError
from kpctl.model import (
    Comm,
    Dereference,
    FetchArg,
    FunctionArgument,
    Immediate,
    MemoryAddress,
    Register,
    ReturnValue,
    StackAddress,
    StackEntry,
)

# The program's stack frame, as offsets from R10.
KEY = -32  # struct {u32 probe; u32 slot (a log2 bucket); u64 value (the --by value); char comm[16]}
KEY_FORMAT = "<IIQ16s"
ZERO = -40  # a counter's first value
SCRATCH = -48  # memory read by a fetch argument
DROPPED_KEY = -52
CALL, CALL_SIZE = -64, 8  # latency: struct {u32 tid; u32 probe}
DEPTH_ZERO = -68
FRAME, FRAME_SIZE = -88, 16  # latency: struct {u32 tid; u32 probe; u32 depth; u32 pad}
NOW = -96

NOEXIST = 1
MAX_STACK = 127  # frames: sysctl kernel.perf_event_max_stack's default


class Arch(NamedTuple):
    """Where struct pt_regs keeps what fetch arguments name."""
    args: tuple[int, ...]  # offsets of the argument registers, in order
    retval: int
    sp: int
    registers: dict[str, int]


_X86_64 = dict(zip(("r15", "r14", "r13", "r12", "bp", "bx", "r11", "r10", "r9", "r8", "ax", "cx", "dx", "si", "di",
                    "orig_ax", "ip", "cs", "flags", "sp", "ss"), range(0, 168, 8), strict=True))
_ARM64 = {**{f"x{n}": 8 * n for n in range(31)}, "sp": 248, "pc": 256, "pstate": 264}
ARCHES = {
    "x86_64": Arch(tuple(_X86_64[r] for r in ("di", "si", "dx", "cx", "r8", "r9")), _X86_64["ax"], _X86_64["sp"], _X86_64),
    "aarch64": Arch(tuple(8 * n for n in range(8)), 0, _ARM64["sp"], _ARM64),
}


def this_arch() -> Arch:
    return ARCHES[os.uname().machine]


class CountMaps(NamedTuple):
    counts: int  # hash: KEY -> u64 hits
    dropped: int  # array of one u64: hits a full hash could not keep
    stacks: int | None = None  # stack trace map, where --by stack


class LatencyMaps(NamedTuple):
    depth: int  # hash: CALL -> u32 calls of the function the thread is in
    start: int  # hash: FRAME -> u64 entry time


Split = str | FetchArg | None  # what --by names: pid, comm, cpu, stack, a fetch argument, nothing


def decode_key(raw: bytes) -> tuple[int, int, int, str]:
    """A counts key: (probe, slot, value, comm)."""
    probe, slot, value, comm = struct.unpack(KEY_FORMAT, raw)
    return probe, slot, value, comm.split(b"\0", 1)[0].decode(errors="replace")


def _bits(arg: FetchArg) -> int:
    base = arg.type.base if arg.type is not None else "x64"
    return int(base[1:])


def fetch(arg: FetchArg, is_return: bool, arch: Arch) -> list[Item]:
    """Instructions leaving arg's value in R7 (ctx in R6), cut to its type's bits.
    UsageError for what this engine cannot fetch."""
    if arg.type is not None and (arg.type.base[:1] not in "usx" or not arg.type.base[1:].isdigit()
                                 or arg.type.bitfield or arg.type.array is not None):
        raise UsageError(f"the bpf engine counts by integer types (u32, s64, x64, ...), not {arg.type}")
    bits = _bits(arg)
    code = _fetch(arg.fetch, bits // 8, is_return, arch)
    if bits == 32:
        code.append(mov32(R7, R7))
    elif bits < 32:
        code.append(alu64(AND, R7, imm=(1 << bits) - 1))
    return code


def _fetch(value: object, size: int, is_return: bool, arch: Arch) -> list[Item]:
    if isinstance(value, FunctionArgument) and not value.access and 1 <= value.index <= len(arch.args):
        return [load(8, R7, R6, arch.args[value.index - 1])]
    if isinstance(value, ReturnValue) and not value.access and is_return:
        return [load(8, R7, R6, arch.retval)]
    if isinstance(value, Register) and value.name in arch.registers:
        return [load(8, R7, R6, arch.registers[value.name])]
    if isinstance(value, StackAddress):
        return [load(8, R7, R6, arch.sp)]
    if isinstance(value, StackEntry):
        return _read([load(8, R7, R6, arch.sp)], 8 * value.index, 8, user=False)
    if isinstance(value, Immediate) and not value.text.startswith('"'):
        return load_imm64(R7, int(value.text, 0))
    if isinstance(value, MemoryAddress):
        return _read(load_imm64(R7, value.address), 0, size, user=False)
    if isinstance(value, Dereference):
        return _read(_fetch(value.base, 8, is_return, arch), value.offset, size, value.user)
    arguments = f"$arg1..$arg{len(arch.args)}"
    raise UsageError(f"the bpf engine fetches {arguments}, $retval, $stackN, %REG, @ADDR, +OFFS(...) and $comm, "
                     f"not {value}")


def _read(address: list[Item], offset: int, size: int, user: bool) -> list[Item]:
    """R7 = size bytes at R7 (computed by address) + offset; 0 where the read faults."""
    return [
        *address,
        store_imm(8, R10, SCRATCH, 0),
        alu64(MOV, R3, R7), alu64(ADD, R3, imm=offset),
        alu64(MOV, R1, R10), alu64(ADD, R1, imm=SCRATCH),
        alu64(MOV, R2, imm=size),
        call(PROBE_READ_USER if user else PROBE_READ_KERNEL),
        load(size, R7, R10, SCRATCH),
    ]


def _comm(at: int) -> list[Item]:
    return [alu64(MOV, R1, R10), alu64(ADD, R1, imm=at), alu64(MOV, R2, imm=16), call(GET_CURRENT_COMM)]


def _split(split: Split, maps: CountMaps, is_return: bool, arch: Arch) -> list[Item]:
    """Instructions filling the key's value and comm as --by asks."""
    value_at, comm_at = KEY + 8, KEY + 16
    if split is None:
        return []
    if split == "pid":  # the thread's id, as hist triggers' common_pid
        return [call(GET_CURRENT_PID_TGID), mov32(R0, R0), store(8, R10, value_at, R0), *_comm(comm_at)]
    if split == "comm" or (isinstance(split, FetchArg) and isinstance(split.fetch, Comm)):
        return _comm(comm_at)
    if split == "cpu":
        return [call(GET_SMP_PROCESSOR_ID), store(8, R10, value_at, R0)]
    if split == "stack":
        assert maps.stacks is not None
        return [alu64(MOV, R1, R6), *load_map(R2, maps.stacks), alu64(MOV, R3, imm=0), call(GET_STACKID),
                store(8, R10, value_at, R0)]
    assert isinstance(split, FetchArg)
    return [*fetch(split, is_return, arch), store(8, R10, value_at, R7)]


def _log2_up(register: int) -> list[Item]:
    """R0 = the bucket of register's value as hist triggers' .log2 keys it:
    ilog2(roundup_pow_of_two(v)), 0 for 0 and 1. Clobbers register and R2."""
    code: list[Item] = [alu64(MOV, R0, imm=0), jump(JLE, register, "log2_done", imm=1),
                        alu64(SUB, register, imm=1), alu64(MOV, R0, imm=1)]
    for shift in (32, 16, 8, 4, 2, 1):
        code += [alu64(MOV, R2, register), alu64(RSH, R2, imm=shift), jump(JEQ, R2, f"log2_{shift}", imm=0),
                 alu64(MOV, register, R2), alu64(ADD, R0, imm=shift), Label(f"log2_{shift}")]
    return [*code, Label("log2_done")]


def _count(maps: CountMaps) -> list[Item]:
    """The hit counted under KEY, or in dropped if the hash is full; then exit."""
    def lookup() -> list[Item]:
        return [*load_map(R1, maps.counts), alu64(MOV, R2, R10), alu64(ADD, R2, imm=KEY), call(MAP_LOOKUP_ELEM)]

    return [
        *lookup(), jump(JNE, R0, "add"),
        store_imm(8, R10, ZERO, 0),
        *load_map(R1, maps.counts), alu64(MOV, R2, R10), alu64(ADD, R2, imm=KEY),
        alu64(MOV, R3, R10), alu64(ADD, R3, imm=ZERO), alu64(MOV, R4, imm=NOEXIST), call(MAP_UPDATE_ELEM),
        *lookup(), jump(JNE, R0, "add"),
        store_imm(4, R10, DROPPED_KEY, 0),
        *load_map(R1, maps.dropped), alu64(MOV, R2, R10), alu64(ADD, R2, imm=DROPPED_KEY), call(MAP_LOOKUP_ELEM),
        jump(JEQ, R0, "out", imm=0),
        Label("add"), alu64(MOV, R1, imm=1), atomic_add(8, R0, 0, R1),
        Label("out"), alu64(MOV, R0, imm=0), exit_(),
    ]


def _zero_key() -> list[Item]:
    return [store_imm(8, R10, KEY + at, 0) for at in range(0, 32, 8)]


def count_program(maps: CountMaps, split: Split, log2: bool, is_return: bool, arch: Arch) -> list[Item]:
    """Each hit counted under (probe, --by value); with log2, under the bucket of the
    fetch argument split names instead."""
    code: list[Item] = [alu64(MOV, R6, R1), *_zero_key(), call(GET_ATTACH_COOKIE), store(4, R10, KEY, R0)]
    code += _split(split, maps, is_return, arch)
    if log2:
        code += [load(8, R1, R10, KEY + 8), *_log2_up(R1), store(4, R10, KEY + 4, R0), store_imm(8, R10, KEY + 8, 0)]
    return code + _count(maps)


def _call_key() -> list[Item]:
    """CALL = {this thread, this probe}; R1 = ctx."""
    return [call(GET_ATTACH_COOKIE), store(4, R10, CALL + 4, R0),
            call(GET_CURRENT_PID_TGID), store(4, R10, CALL, R0)]


def _map_call(helper: int, map_fd: int, key_at: int, value_at: int | None = None, flags: int = 0) -> list[Item]:
    code = [*load_map(R1, map_fd), alu64(MOV, R2, R10), alu64(ADD, R2, imm=key_at)]
    if value_at is not None:
        code += [alu64(MOV, R3, R10), alu64(ADD, R3, imm=value_at), alu64(MOV, R4, imm=flags)]
    return [*code, call(helper)]


def _frame(depth: int) -> list[Item]:
    """FRAME = {CALL's thread and probe, depth (a register)}."""
    return [load(4, R1, R10, CALL), store(4, R10, FRAME, R1), load(4, R1, R10, CALL + 4), store(4, R10, FRAME + 4, R1),
            store(4, R10, FRAME + 8, depth), store_imm(4, R10, FRAME + 12, 0)]


def latency_entry(maps: LatencyMaps) -> list[Item]:
    """The entry time of this call, kept under its thread, probe and call depth."""
    return [
        alu64(MOV, R6, R1), *_call_key(),
        *_map_call(MAP_LOOKUP_ELEM, maps.depth, CALL), jump(JNE, R0, "have_depth"),
        store_imm(4, R10, DEPTH_ZERO, 0),
        *_map_call(MAP_UPDATE_ELEM, maps.depth, CALL, DEPTH_ZERO, NOEXIST),
        *_map_call(MAP_LOOKUP_ELEM, maps.depth, CALL), jump(JEQ, R0, "out", imm=0),
        Label("have_depth"), alu64(MOV, R7, R0), load(4, R8, R7, 0),
        *_frame(R8),
        call(KTIME_GET_NS), store(8, R10, NOW, R0),
        *_map_call(MAP_UPDATE_ELEM, maps.start, FRAME, NOW, 0),
        alu64(ADD, R8, imm=1), store(4, R7, 0, R8),
        Label("out"), alu64(MOV, R0, imm=0), exit_(),
    ]


def latency_return(maps: LatencyMaps, counts: CountMaps, split: Split, unit_ns: int, arch: Arch) -> list[Item]:
    """The time since this call's entry, in unit_ns, counted in its log2 bucket; a
    return whose entry was not seen (the call began before the probe) is not counted."""
    return [
        alu64(MOV, R6, R1), call(KTIME_GET_NS), alu64(MOV, R9, R0),
        alu64(MOV, R1, R6), *_call_key(),
        *_map_call(MAP_LOOKUP_ELEM, maps.depth, CALL), jump(JEQ, R0, "out", imm=0),
        alu64(MOV, R7, R0), load(4, R8, R7, 0), jump(JEQ, R8, "out", imm=0),
        alu64(SUB, R8, imm=1), store(4, R7, 0, R8),
        *_frame(R8),
        *_map_call(MAP_LOOKUP_ELEM, maps.start, FRAME), jump(JEQ, R0, "out", imm=0),
        load(8, R1, R0, 0), alu64(SUB, R9, R1), alu64(DIV, R9, imm=unit_ns),
        *_map_call(MAP_DELETE_ELEM, maps.start, FRAME),
        jump(JNE, R8, "inner", imm=0),
        *_map_call(MAP_DELETE_ELEM, maps.depth, CALL),
        Label("inner"),
        *_zero_key(), load(4, R1, R10, CALL + 4), store(4, R10, KEY, R1),
        *_split(split, counts, True, arch),
        alu64(MOV, R1, R9), *_log2_up(R1), store(4, R10, KEY + 4, R0),
        *_count(counts),
    ]


def hit_counter(counter: int) -> list[Item]:
    """Every hit added to the one u64 of an array map (bench's BPF rows)."""
    return [
        store_imm(4, R10, DROPPED_KEY, 0),
        *load_map(R1, counter), alu64(MOV, R2, R10), alu64(ADD, R2, imm=DROPPED_KEY), call(MAP_LOOKUP_ELEM),
        jump(JEQ, R0, "out", imm=0),
        alu64(MOV, R1, imm=1), atomic_add(8, R0, 0, R1),
        Label("out"), alu64(MOV, R0, imm=0), exit_(),
    ]
