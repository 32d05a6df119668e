"""Decoding and judging kernel code, on byte sequences measured in the guests
(../shared/notes/guest-vms.md) and on the instructions the kernel's rules name."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.importorskip("capstone")

from kpctl.errors import KpctlError
from kpctl.inspect import disasm
from kpctl.inspect.disasm import (
    Instruction,
    boundaries_of,
    changed_bytes,
    disassemble,
    ftrace_site,
    host_arch,
    kprobe_offset,
    probe_refusal,
    recognise,
)

X86_BASE = 0xFFFFFFFF981669E0
# vfs_read on x86_64 6.1: ftrace's nop, push %r15, push %r14, push %r13, push %r12.
X86_BEFORE = bytes.fromhex("0f1f440000 4157 4156 4155 4154")
X86_ARMED = bytes.fromhex("0f1f440000 cc57 4156 4155 4154")  # int3 over push %r15
X86_OPTIMIZED = bytes.fromhex("0f1f440000 e96668ed3e 55 4154")  # jmp over +5..+9
X86_FTRACE_ON = bytes.fromhex("e81bc6c72b 4157 4156 4155 4154")
ARM_BASE = 0xFFFF800008345678 & ~3
# vfs_read on arm64 6.1: mov x9, x30; nop; paciasp; stp x29, x30, [sp, #-0x40]!
ARM_BEFORE = bytes.fromhex("e9031eaa 1f2003d5 3f2303d5 fd7bbca9")
ARM_ARMED = bytes.fromhex("e9031eaa 1f2003d5 800020d4 fd7bbca9")


def _x86(code: bytes, original: bytes | None = None) -> list[Instruction]:
    bounds = boundaries_of(disassemble(original, X86_BASE, "x86_64")) if original else None
    return disassemble(code, X86_BASE, "x86_64", bounds)


def test_x86_boundaries() -> None:
    insns = _x86(X86_BEFORE)
    assert [i.offset for i in insns] == [0, 5, 7, 9, 11]
    assert insns[1].text == "push r15"


def test_x86_int3_decodes_along_the_original_boundaries() -> None:
    insns = _x86(X86_ARMED, X86_BEFORE)
    assert [(i.offset, i.mnemonic) for i in insns[:4]] == [(0, "nop"), (5, "int3"), (6, ".byte"), (7, "push")]
    assert insns[2].raw == b"\x57"  # the rest of push %r15, never executed while armed
    note = recognise(insns[1], "x86_64", 0, _x86(X86_BEFORE)[1])
    assert note.startswith("int3: kprobe breakpoint")


def test_x86_optimized_jump() -> None:
    insns = _x86(X86_OPTIMIZED, X86_BEFORE)
    jump = insns[1]
    assert (jump.offset, jump.raw[0], len(jump.raw)) == (5, 0xE9, 5)
    assert (insns[2].offset, insns[2].mnemonic, insns[2].raw) == (10, ".byte", b"\x55")
    target = X86_BASE + 10 + 0x3EED6866
    note = recognise(jump, "x86_64", 0, _x86(X86_BEFORE)[1], lambda a: "optinsn_slot" if a == target else None)
    assert note.startswith("jmp optinsn_slot: optimized kprobe")


def test_x86_ftrace_site_and_call() -> None:
    assert ftrace_site(_x86(X86_BEFORE), "x86_64") == 0
    assert recognise(_x86(X86_BEFORE)[0], "x86_64", 0).startswith("ftrace site")
    call = _x86(X86_FTRACE_ON)[0]
    assert ftrace_site(_x86(X86_FTRACE_ON), "x86_64") == 0
    assert "ftrace is on" in recognise(call, "x86_64", 0, _x86(X86_BEFORE)[0])


@pytest.mark.parametrize("endbr", ["f30f1efa", "660f1f00"])  # ENDBR64, and sealed (poisoned)
def test_x86_ftrace_site_after_endbr(endbr: str) -> None:
    insns = disassemble(bytes.fromhex(endbr + "0f1f440000 55"), X86_BASE, "x86_64")
    assert ftrace_site(insns, "x86_64") == 4
    assert kprobe_offset(insns, "x86_64", 0) == 4 and kprobe_offset(insns, "x86_64", 9) == 9
    assert kprobe_offset(_x86(X86_BEFORE), "x86_64", 0) == 0
    assert ftrace_site(disassemble(bytes.fromhex("55 0f1f440000"), X86_BASE, "x86_64"), "x86_64") is None


def test_a_function_int3_is_not_a_kprobe() -> None:
    insn = _x86(b"\xcc", b"\xcc")[0]
    assert recognise(insn, "x86_64", None, insn) == ""


@pytest.mark.parametrize(("code", "refused"), [
    ("4157", None),  # push %r15
    ("0f0b", "ud2"),  # BUG()
    ("cc", "int3"),
    ("cd80", "int n"),
    ("f1", "int1"),
    ("cf", "iret"),
    ("0f01c1", "VMX"),  # vmcall
    ("e800000000", None),  # a call is emulated
    ("f390", None),  # pause: a prefixed instruction that is fine
])
def test_x86_refusals(code: str, refused: str | None) -> None:
    insn = disassemble(bytes.fromhex(code), X86_BASE, "x86_64")[0]
    reason = probe_refusal(insn, "x86_64")
    assert (reason is None) if refused is None else (reason is not None and refused in reason)


def test_arm64_brk_and_ftrace_site() -> None:
    before = disassemble(ARM_BEFORE, ARM_BASE, "arm64")
    armed = disassemble(ARM_ARMED, ARM_BASE, "arm64", boundaries_of(before))
    assert [i.offset for i in before] == [0, 4, 8, 12]
    site = ftrace_site(before, "arm64")
    assert site == 4
    assert recognise(before[0], "arm64", site).startswith("ftrace: saves the return address")
    assert recognise(before[1], "arm64", site).startswith("ftrace site")
    assert armed[2].mnemonic == "brk" and armed[2].raw == bytes.fromhex("800020d4")
    assert recognise(armed[2], "arm64", site, before[2]).startswith("brk #0x4: kprobe breakpoint")
    assert changed_bytes(ARM_BEFORE, ARM_ARMED) == frozenset(range(8, 12))


def test_arm64_ftrace_call() -> None:
    code = bytes.fromhex("e9031eaa") + (0x94000000 | 0x100).to_bytes(4, "little")  # bl .+0x400
    insns = disassemble(code, ARM_BASE, "arm64")
    note = recognise(insns[1], "arm64", 4, symbolize=lambda a: "ftrace_caller" if a == ARM_BASE + 4 + 0x400 else None)
    assert note == "bl ftrace_caller: ftrace is on at this function"


@pytest.mark.parametrize(("word", "refused"), [
    (0xD503233F, None),  # paciasp: a steppable hint
    (0xD503201F, None),  # nop
    (0xA9BC7BFD, None),  # stp x29, x30, [sp, #-0x40]!
    (0x94000010, None),  # bl: simulated
    (0xD65F03C0, None),  # ret: simulated
    (0x58000040, None),  # ldr x0, literal: simulated
    (0xD50323BF, "hint"),  # autiasp
    (0xD503203F, "hint"),  # yield
    (0xD4200080, "exception"),  # brk #0x4
    (0xD4000001, "exception"),  # svc #0
    (0xD69F03E0, "ERET"),
    (0xD65F0BFF, "RETAA"),
    (0xD51B4220, "MSR"),  # msr daif, x0
    (0xD53B4220, "DAIF"),  # mrs x0, daif: the one MRS kprobes refuse
    (0xD538D080, None),  # mrs x0, tpidr_el1
    (0xD5384104, None),  # mrs x4, sp_el0
    (0xC85F7C20, "exclusive"),  # ldxr x0, [x1]
    (0x9C000040, "literal"),  # ldr q0, literal
])
def test_arm64_refusals(word: int, refused: str | None) -> None:
    insn = disassemble(word.to_bytes(4, "little"), ARM_BASE, "arm64")[0]
    reason = probe_refusal(insn, "arm64")
    assert (reason is None) if refused is None else (reason is not None and refused in reason), reason


def test_undecodable_bytes_and_changes() -> None:
    insns = disassemble(b"\xff\xff\xff\xff", ARM_BASE, "arm64")
    assert insns[0].mnemonic == ".byte" and probe_refusal(insns[0], "arm64")
    assert changed_bytes(X86_BEFORE, X86_ARMED) == frozenset({5})


def test_host_arch() -> None:
    assert host_arch("x86_64") == "x86_64" and host_arch("aarch64") == "arm64"
    with pytest.raises(KpctlError, match="riscv64"):
        host_arch("riscv64")


class _Capstone4:
    """Debian 12's capstone 4 decodes the ARMv8.3 PAC hints only as "hint #imm"."""

    def disasm_lite(self, code: bytes, address: int, count: int) -> Iterator[tuple[int, int, str, str]]:
        imm = (int.from_bytes(code[:4], "little") >> 5) & 0x7F
        yield address, 4, "hint", f"#{imm:#x}"


@pytest.mark.parametrize(("word", "text"), [
    (0xD503233F, "paciasp"), (0xD50323BF, "autiasp"), (0xD503245F, "bti c"), (0xD50320DF, "hint #0x6"),
])
def test_arm64_hints_get_their_names(monkeypatch: pytest.MonkeyPatch, word: int, text: str) -> None:
    monkeypatch.setitem(disasm._decoders, "arm64", _Capstone4())
    [insn] = disassemble(word.to_bytes(4, "little"), ARM_BASE, "arm64")
    assert insn.text == text
