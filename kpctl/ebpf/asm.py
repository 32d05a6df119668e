"""BPF instructions and a small assembler with labels: what a compiler would emit for
the counting programs, written by hand. Pure: bytes out, no system calls.

The encoding is the kernel's (Documentation/bpf/standardization/instruction-set.rst):
eight bytes per instruction, opcode, dst and src registers in one byte (dst in the low
nibble on little-endian machines, the only ones kpctl runs on), a signed 16-bit offset
and a signed 32-bit immediate; a 64-bit immediate load takes two.
"""
from __future__ import annotations

import struct
from typing import NamedTuple

R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10 = range(11)  # R10: the read-only frame pointer

# Classes, sizes, modes, operations and sources.
LD, LDX, ST, STX, ALU, JMP, ALU64 = 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x07
SIZES = {8: 0x18, 4: 0x00, 2: 0x08, 1: 0x10}  # bytes -> BPF_DW, BPF_W, BPF_H, BPF_B
IMM, MEM, ATOMIC = 0x00, 0x60, 0xC0
K, X = 0x00, 0x08
ADD, SUB, DIV, AND, RSH, MOV = 0x00, 0x10, 0x30, 0x50, 0x70, 0xB0
JA, JEQ, JNE, JLE, CALL, EXIT = 0x00, 0x10, 0x50, 0xB0, 0x80, 0x90
PSEUDO_MAP_FD = 1  # src of a 64-bit load: imm is a map's file descriptor

# Helpers by number (include/uapi/linux/bpf.h, __BPF_FUNC_MAPPER): all there since 5.15.
MAP_LOOKUP_ELEM, MAP_UPDATE_ELEM, MAP_DELETE_ELEM = 1, 2, 3
KTIME_GET_NS, GET_SMP_PROCESSOR_ID, GET_CURRENT_PID_TGID, GET_CURRENT_COMM = 5, 8, 14, 16
GET_STACKID, PROBE_READ_USER, PROBE_READ_KERNEL, GET_ATTACH_COOKIE = 27, 112, 113, 174


# NamedTuples, not dataclasses: a dataclass costs milliseconds to define at import, more
# under emulation, and counting starts with this import.
class Insn(NamedTuple):
    opcode: int
    dst: int = 0
    src: int = 0
    off: int | str = 0  # a label's name for a jump, resolved by assemble()
    imm: int = 0


class Label(NamedTuple):
    name: str


Item = Insn | Label


def alu64(op: int, dst: int, src: int | None = None, imm: int = 0) -> Insn:
    """dst op= src (a register) or imm, on 64 bits."""
    return Insn(ALU64 | op | (K if src is None else X), dst, src or 0, 0, imm)


def mov32(dst: int, src: int) -> Insn:
    """dst = the low 32 bits of src, zero-extended."""
    return Insn(ALU | MOV | X, dst, src)


def load_map(dst: int, map_fd: int) -> list[Item]:
    return [Insn(LD | SIZES[8] | IMM, dst, PSEUDO_MAP_FD, 0, map_fd), Insn(0)]


def load_imm64(dst: int, value: int) -> list[Item]:
    value &= (1 << 64) - 1
    return [Insn(LD | SIZES[8] | IMM, dst, 0, 0, _s32(value & 0xFFFFFFFF)), Insn(0, 0, 0, 0, _s32(value >> 32))]


def load(size: int, dst: int, src: int, off: int) -> Insn:
    """dst = *(size bytes *)(src + off)"""
    return Insn(LDX | SIZES[size] | MEM, dst, src, off)


def store(size: int, dst: int, off: int, src: int) -> Insn:
    """*(size bytes *)(dst + off) = src"""
    return Insn(STX | SIZES[size] | MEM, dst, src, off)


def store_imm(size: int, dst: int, off: int, imm: int) -> Insn:
    return Insn(ST | SIZES[size] | MEM, dst, 0, off, imm)


def atomic_add(size: int, dst: int, off: int, src: int) -> Insn:
    """*(dst + off) += src, atomically (BPF_XADD before v5.12 spells the same bytes)."""
    return Insn(STX | SIZES[size] | ATOMIC, dst, src, off, ADD)


def jump(op: int, dst: int, label: str, src: int | None = None, imm: int = 0) -> Insn:
    """if dst op src (a register) or imm: goto label."""
    return Insn(JMP | op | (K if src is None else X), dst, src or 0, label, imm)


def goto(label: str) -> Insn:
    return Insn(JMP | JA, 0, 0, label)


def call(helper: int) -> Insn:
    return Insn(JMP | CALL, 0, 0, 0, helper)


def exit_() -> Insn:
    return Insn(JMP | EXIT)


def _s32(value: int) -> int:
    return value - (1 << 32) if value >= 1 << 31 else value


def assemble(items: list[Item]) -> bytes:
    """The instructions' bytes, each jump's label turned into its offset."""
    places: dict[str, int] = {}
    count = 0
    for item in items:
        if isinstance(item, Label):
            if item.name in places:
                raise ValueError(f"label {item.name} defined twice")
            places[item.name] = count
        else:
            count += 1
    code = bytearray()
    pc = 0
    for item in items:
        if isinstance(item, Label):
            continue
        off = item.off
        if isinstance(off, str):
            off = places[off] - pc - 1
        code += struct.pack("<BBhi", item.opcode, (item.src << 4) | item.dst, off, item.imm)
        pc += 1
    return bytes(code)
