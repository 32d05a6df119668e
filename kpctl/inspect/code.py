"""A function's live code, decoded, with where a kprobe may go and what kprobes and
ftrace made of each instruction."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kpctl.inspect.disasm import (
    Arch,
    Instruction,
    boundaries_of,
    changed_bytes,
    disassemble,
    probe_refusal,
    recognise,
)
from kpctl.inspect.kcore import Kcore
from kpctl.inspect.report import CodeLine, Report

_MAX_X86_INSN = 15


def code_lines(
    instructions: Sequence[Instruction], arch: Arch, site: int | None, on_ftrace: bool,
    original: Sequence[Instruction] = (), before: bytes | None = None, after: bytes | None = None,
    symbolize: Callable[[int], str | None] = lambda _: None,
) -> tuple[CodeLine, ...]:
    """CodeLines of instructions. original (the code before any probe) decides where a
    probe may go and what an instruction replaced; before/after mark the changed bytes."""
    by_offset = {i.offset: i for i in original or instructions}
    changed = changed_bytes(before, after) if before is not None and after is not None else frozenset()
    lines = []
    for insn in instructions:
        base = by_offset.get(insn.offset)
        refusal = site_refusal(base, arch, site, on_ftrace) if base else "not an instruction boundary of the original code"
        note = recognise(insn, arch, site, base if original else None, symbolize)
        if insn.mnemonic == ".byte" and original:
            note = "the rest of the instruction the patch replaced: never executed while it is there"
        lines.append(CodeLine(
            offset=insn.offset, address=insn.address, raw=insn.raw, text=insn.text, refusal=refusal, note=note,
            changed=tuple(i - insn.offset for i in range(insn.offset, insn.end) if i in changed),
        ))
    return tuple(lines)


def site_refusal(insn: Instruction, arch: Arch, site: int | None, on_ftrace: bool) -> str | None:
    """Why no kprobe may sit at insn (an instruction of the original code), or None."""
    if insn.offset == site and not on_ftrace:
        # check_ftrace_location(): an ftrace site without CONFIG_KPROBES_ON_FTRACE is -EINVAL.
        return "the ftrace patch site: this kernel cannot put a kprobe on it (no kprobes on ftrace)"
    return probe_refusal(insn, arch)


def offset_refusal(offset: int, instructions: Sequence[Instruction], arch: Arch) -> str | None:
    """Why offset is not a place for a kprobe in this code, judged by boundaries alone."""
    if arch == "arm64" and offset % 4:
        return f"+{offset} is not 4-byte aligned: arm64 instructions are 4 bytes (arch_prepare_kprobe())"
    boundaries = boundaries_of(instructions)
    if arch == "x86_64" and offset not in boundaries and offset < max((i.end for i in instructions), default=0):
        inside = next(i for i in instructions if i.offset < offset < i.end)
        return (
            f"+{offset} is not an instruction boundary: it is inside `{inside.text}` at +{inside.offset} "
            f"(x86 can_probe() decodes from the function's start)"
        )
    return None


@dataclass
class Code:
    """Reads and decodes one function's live text, the same window each time."""
    kcore: Kcore
    report: Report
    length: int

    def read(self) -> bytes:
        return self.kcore.read(self.report.function_address, self.length)

    def decode(self, data: bytes, original: Sequence[Instruction] = ()) -> list[Instruction]:
        instructions = disassemble(
            data, self.report.function_address, self.report.arch, boundaries_of(original) if original else None
        )
        # The window may end inside an instruction: drop what could not be decoded there.
        while instructions and instructions[-1].mnemonic == ".byte" and instructions[-1].end == len(data) and len(data) < self.report.size:
            instructions.pop()
        return instructions


def code_window(report: Report, instructions: int) -> int:
    """How many bytes hold the first `instructions` instructions, and the probed one."""
    per = 4 if report.arch == "arm64" else _MAX_X86_INSN
    return min(max(report.size, 1), max(per * instructions, report.offset + per))
