"""Kernel code as instructions: capstone for decoding, kpctl for what the bytes mean to
kprobes and ftrace.

Three questions are answered here, on bytes read from live text (kpctl/kcore.py):
- where the instructions are, and at which of them a kprobe may sit
  (probe_refusal(): the kernel's own rules, per architecture, cited below);
- what kprobes and ftrace wrote there (recognise(): int3, the optimized jump, the ftrace
  call on x86; BRK #0x4 and the patchable-function-entry site on arm64);
- which bytes changed between two snapshots (changed_bytes()).

capstone is imported when first needed: `kpctl --help` must not pay for it, and a machine
without it can still use every other command. Its Python API is the same in 4.0 (Debian
12) and 5.x (Debian 13, PyPI) for what is used here (Cs, disasm_lite); capstone 6 renames
CS_ARCH_ARM64 to CS_ARCH_AARCH64, which _capstone() accepts too.
"""
from __future__ import annotations

import platform
import struct
import sys
import warnings
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from kpctl.errors import KpctlError

Arch = Literal["x86_64", "arm64"]

# --- x86 ------------------------------------------------------------------------------
X86_INT3 = 0xCC
X86_JMP32 = 0xE9  # JMP rel32: what an optimized kprobe becomes (arch/x86/kernel/kprobes/opt.c)
X86_CALL32 = 0xE8  # CALL rel32: an ftrace site while ftrace uses it
X86_NOP5 = bytes.fromhex("0f1f440000")  # the ftrace site while ftrace is off (x86_nops[5])
X86_ENDBR64 = bytes.fromhex("f30f1efa")
# An ENDBR64 the kernel sealed because nothing calls the function indirectly: a 4-byte
# NOP ("osp nopl (%rax)", gen_endbr_poison(), v6.2). is_endbr() accepts both.
X86_ENDBR_POISON = bytes.fromhex("660f1f00")
# can_probe() refuses exception instructions (is_exception_insn(), v6.1): INT3, INT n,
# INTO, INT1, and UD0/UD1/UD2 (BUG() is a UD2); prepare_emulation() refuses far
# CALL/JMP and IRET (-EOPNOTSUPP).
_X86_REFUSED_OPCODES = {0xCC: "int3", 0xCD: "int n", 0xCE: "into", 0xF1: "int1", 0x9A: "far call", 0xEA: "far jmp", 0xCF: "iret"}
_X86_REFUSED_0F = {0x0B: "ud2", 0xB9: "ud1", 0xFF: "ud0"}
_X86_PREFIXES = frozenset(b"\x66\x67\xf2\xf3\x2e\x36\x3e\x26\x64\x65") | frozenset(range(0x40, 0x50))

# --- arm64 ----------------------------------------------------------------------------
ARM64_KPROBE_BRK = 0xD4200080  # BRK #0x4: BRK64_OPCODE_KPROBES, KPROBES_BRK_IMM (asm/brk-imm.h)
ARM64_NOP = 0xD503201F
ARM64_MOV_X9_X30 = 0xAA1E03E9  # first of the two patchable-function-entry words (ftrace, v5.5)
# HINT-space instructions arm64 kprobes can single-step (aarch64_insn_is_steppable_hint(),
# v6.1), by CRm:op2: NOP, XPACLRI, PACIA1716, PACIB1716, PACIAZ, PACIASP, PACIBZ, PACIBSP
# and the four BTIs. Every other hint (AUTIASP, YIELD, WFE, ...) is refused.
_ARM64_STEPPABLE_HINTS = frozenset({0x00, 0x07, 0x08, 0x0A, 0x18, 0x19, 0x1A, 0x1B, 0x20, 0x22, 0x24, 0x26})
# Names of HINT-space instructions by CRm:op2: capstone 4 (Debian 12) predates ARMv8.3
# and prints PACIASP, the first instruction of most arm64 kernel functions, as "hint #0x19".
_ARM64_HINT_NAMES = {
    0x01: "yield", 0x02: "wfe", 0x03: "wfi", 0x04: "sev", 0x05: "sevl", 0x07: "xpaclri",
    0x08: "pacia1716", 0x0A: "pacib1716", 0x0C: "autia1716", 0x0E: "autib1716", 0x10: "esb",
    0x11: "psb csync", 0x12: "tsb csync", 0x14: "csdb", 0x18: "paciaz", 0x19: "paciasp",
    0x1A: "pacibz", 0x1B: "pacibsp", 0x1C: "autiaz", 0x1D: "autiasp", 0x1E: "autibz",
    0x1F: "autibsp", 0x20: "bti", 0x22: "bti c", 0x24: "bti j", 0x26: "bti jc",
}


@dataclass(frozen=True)
class Instruction:
    """One decoded instruction (or undecodable bytes, mnemonic ``.byte``)."""
    offset: int  # from the start of the function
    address: int
    raw: bytes
    mnemonic: str
    operands: str

    @property
    def end(self) -> int:
        return self.offset + len(self.raw)

    @property
    def text(self) -> str:
        return f"{self.mnemonic} {self.operands}".rstrip()


def host_arch(machine: str | None = None) -> Arch:
    """The kernel's architecture as kpctl names it, from uname's machine field."""
    machine = machine or platform.machine()
    if machine in ("x86_64", "amd64"):
        return "x86_64"
    if machine in ("aarch64", "arm64"):
        return "arm64"
    raise KpctlError(f"kpctl inspect knows x86_64 and arm64 code, not {machine}")


_decoders: dict[Arch, Any] = {}


def _import_capstone() -> Any:
    """capstone 4 (Debian 12) imports distutils.sysconfig to find its library. setuptools'
    distutils shim (distutils-precedence.pth, on sys.meta_path from start-up) answers that
    by importing setuptools: 0.2 s, 2.7 s of `kpctl inspect` in an emulated guest. Python
    3.11's own distutils gives the same answer in 5 ms, so the shim steps aside for it."""
    shims = [f for f in sys.meta_path if type(f).__module__ == "_distutils_hack"]
    if "distutils" not in sys.stdlib_module_names or "distutils" in sys.modules or not shims:
        import capstone
        return capstone
    for shim in shims:
        sys.meta_path.remove(shim)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # distutils is deprecated in 3.11
            import capstone
    finally:
        sys.meta_path[0:0] = shims
    return capstone


def _capstone(arch: Arch) -> Any:
    if arch not in _decoders:
        try:
            capstone = _import_capstone()
        except ImportError as e:
            raise KpctlError(
                "disassembly needs capstone, which is not installed",
                "install it: apt install python3-capstone, or pip install capstone",
            ) from e
        if arch == "x86_64":
            _decoders[arch] = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
        else:
            cs_arch = getattr(capstone, "CS_ARCH_ARM64", None) or capstone.CS_ARCH_AARCH64
            _decoders[arch] = capstone.Cs(cs_arch, capstone.CS_MODE_ARM)
    return _decoders[arch]


def disassemble(code: bytes, address: int, arch: Arch, boundaries: Collection[int] | None = None) -> list[Instruction]:
    """Decode code, which starts at kernel address address (offset 0).

    Bytes capstone cannot decode become ``.byte`` entries up to the next instruction
    boundary. With boundaries (the offsets where the original code's instructions start),
    decoding re-synchronises on them: patched code is read the way the CPU meets it.
    An int3 over the first byte of ``push %r15`` (``cc 57``) shows as ``int3`` and then
    the leftover ``57`` as ``.byte``, not as a ``push %rdi`` that never runs; the same for
    the tail of the last instruction an optimized kprobe's 5-byte jump covers.
    """
    step = 4 if arch == "arm64" else 1
    decoder = _capstone(arch)
    out: list[Instruction] = []
    offset = 0
    while offset < len(code):
        # Run to the end, not next(): a generator closed by the garbage collector frees
        # capstone's buffer in a finalizer, where a Ctrl-C is printed and then dropped.
        found = list(decoder.disasm_lite(code[offset:], address + offset, 1))
        decoded = found[0] if found else None
        size = decoded[1] if decoded else 0
        if decoded and (boundaries is None or offset in boundaries or not out):
            mnemonic, operands = decoded[2], decoded[3]
            if mnemonic == "hint" and arch == "arm64":
                mnemonic, operands = _arm64_hint(code[offset:offset + size], mnemonic, operands)
            out.append(Instruction(offset, address + offset, code[offset:offset + size], mnemonic, operands))
            offset += size
            continue
        # Not an instruction the CPU starts here: data up to the next boundary.
        end = min((b for b in (boundaries or ()) if b > offset), default=offset + (size or step))
        end = min(end, len(code))
        out.append(Instruction(offset, address + offset, code[offset:end], ".byte", ", ".join(f"{b:#04x}" for b in code[offset:end])))
        offset = end
    return out


def _arm64_hint(raw: bytes, mnemonic: str, operands: str) -> tuple[str, str]:
    name = _ARM64_HINT_NAMES.get((int.from_bytes(raw, "little") >> 5) & 0x7F)
    return (name, "") if name else (mnemonic, operands)


def boundaries_of(instructions: Sequence[Instruction]) -> frozenset[int]:
    return frozenset(i.offset for i in instructions if i.mnemonic != ".byte")


def changed_bytes(before: bytes, after: bytes) -> frozenset[int]:
    """Offsets at which two snapshots of the same code differ."""
    return frozenset(i for i, (a, b) in enumerate(zip(before, after)) if a != b)


def ftrace_site(instructions: Sequence[Instruction], arch: Arch) -> int | None:
    """Where ftrace patches this function, found from the code itself (the caller checks
    that the function is in available_filter_functions at all).

    x86: the 5-byte NOP or CALL of -mfentry at +0, or at +4 after an ENDBR64 (IBT, v5.18).
    arm64: -fpatchable-function-entry=2 emits ``mov x9, x30; nop`` at entry (v5.5, commit
    3b23e4991fb6); the second word is the site (ftrace_call_adjust() adds 4), and may
    follow a BTI C.
    """
    for insn in instructions[:3]:
        if arch == "x86_64":
            if insn.raw == X86_NOP5 or (len(insn.raw) == 5 and insn.raw[0] == X86_CALL32):
                return insn.offset
            if insn.raw not in (X86_ENDBR64, X86_ENDBR_POISON):
                return None
        elif _word(insn) == ARM64_MOV_X9_X30:
            return insn.end
    return None


def kprobe_mark(code: bytes, arch: Arch) -> str | None:
    """What kprobes or ftrace wrote at a kprobe's address, from the first bytes there:
    a breakpoint ("int3", arm64 "brk"), an optimized kprobe's "jmp", or the call of an
    ftrace site that a kprobe on ftrace uses ("call", arm64 "bl"); None when the code
    there is not patched."""
    if arch == "x86_64":
        return {X86_INT3: "int3", X86_JMP32: "jmp", X86_CALL32: "call"}.get(code[0])
    word = struct.unpack_from("<I", code)[0]
    if word == ARM64_KPROBE_BRK:
        return "brk"
    return "bl" if (word & 0xFC000000) == 0x94000000 else None


def kprobe_offset(instructions: Sequence[Instruction], arch: Arch, offset: int) -> int:
    """Where the kernel really puts a probe asked for at offset: on x86 a probe at sym+0
    of a function that starts with ENDBR64 (or its poison) goes to +4, past it
    (arch_adjust_kprobe_addr(), v5.18, commit cc66bb914578), which is the ftrace site."""
    if arch == "x86_64" and offset == 0 and instructions and instructions[0].raw in (X86_ENDBR64, X86_ENDBR_POISON):
        return 4
    return offset


def probe_refusal(insn: Instruction, arch: Arch) -> str | None:
    """Why arch's kprobes refuse to put a probe on insn, or None when they accept it.

    A probe must also start an instruction (x86) or be 4-byte aligned (arm64): offsets
    that are not an Instruction's never get here (see inspect.offset_refusal()).
    """
    if arch == "arm64" and len(insn.raw) == 4:
        # An older capstone (4.0) may not know a newer instruction (RETAA): judge the word.
        reason = _arm64_refusal(_word(insn))
        return reason or ("capstone cannot decode this word" if insn.mnemonic == ".byte" else None)
    if insn.mnemonic == ".byte":
        return "not an instruction the CPU executes"
    return _x86_refusal(insn.raw)


def _x86_refusal(raw: bytes) -> str | None:
    i = 0
    while i < len(raw) - 1 and raw[i] in _X86_PREFIXES:
        i += 1
    opcode = raw[i]
    if opcode == 0x0F and i + 1 < len(raw):
        name = _X86_REFUSED_0F.get(raw[i + 1])
        if name:
            return f"{name} raises an exception: x86 kprobes never probe INT or UD (can_probe())"
        if raw[i + 1] == 0x01 and i + 2 < len(raw) and raw[i + 2] >> 6 == 3 and (raw[i + 2] >> 3) & 7 == 0:
            return "a VMX instruction: x86 kprobes cannot emulate it (prepare_emulation())"
        return None
    name = _X86_REFUSED_OPCODES.get(opcode)
    if name is None:
        return None
    if opcode in (0xCC, 0xCD, 0xCE, 0xF1):
        return f"{name} raises an exception: x86 kprobes never probe INT or UD (can_probe())"
    return f"{name}: x86 kprobes cannot emulate it (prepare_emulation())"


def _arm64_refusal(word: int) -> str | None:
    """arm64 kprobes step the instruction out of line or simulate it; the rest is
    INSN_REJECTED (arch/arm64/kernel/probes/decode-insn.c, v6.1)."""
    if word == ARM64_KPROBE_BRK or (word & 0xFF000000) == 0xD4000000:
        return "an exception-generating instruction (SVC/HVC/SMC/BRK/HLT) cannot be single-stepped"
    if (word & 0xFFFFF01F) == 0xD503201F:  # HINT space
        if ((word >> 5) & 0x7F) not in _ARM64_STEPPABLE_HINTS:
            return "a hint arm64 kprobes do not step (only NOP, PAC*, XPACLRI and BTI are)"
        return None
    if (word & 0xFFFFFBFF) == 0xD69F03E0 or (word & 0xFFFFFBFF) == 0xD69F0BFF:
        return "ERET cannot be single-stepped"
    if (word & 0xFFFFFBFF) == 0xD65F0BFF:
        return "RETAA/RETAB: arm64 kprobes neither step nor simulate it"
    if (word & 0xFFF8F01F) == 0xD500401F or (word & 0xFFF00000) == 0xD5100000:
        return "MSR may change state single-stepping depends on"
    # aarch64_insn_is_steppable() steps every MRS but one: DAIF reads back masked
    # while the copy is stepped with interrupts off.
    if (word & 0xFFF00000) == 0xD5300000 and ((word >> 5) & 0xFFFF) == 0xDA11:
        return "MRS of DAIF would read the masked state of single-stepping"
    if (word & 0x3F800000) == 0x08000000:
        return "an exclusive load/store: single-stepping breaks the exclusive monitor"
    if (word & 0x3B000000) == 0x18000000 and (word & 0xBF000000) != 0x18000000 and (word & 0xFF000000) != 0x98000000:
        return "a PC-relative literal load kprobes do not simulate"
    return None


def recognise(insn: Instruction, arch: Arch, site: int | None, original: Instruction | None = None,
              symbolize: Callable[[int], str | None] = lambda _: None) -> str:
    """What kprobes or ftrace made of insn, in words; "" when it is ordinary code.

    original is the instruction that started at the same offset before any probe, when
    known: an int3 or jmp that was already there is the function's own.
    """
    changed = original is not None and original.raw[:len(insn.raw)] != insn.raw
    if arch == "x86_64":
        first = insn.raw[0]
        if first == X86_INT3 and (original is None or changed):
            return "int3: kprobe breakpoint (trap, then the saved instruction runs out of line)"
        if first in (X86_JMP32, X86_CALL32) and len(insn.raw) == 5:
            target = insn.address + 5 + struct.unpack_from("<i", insn.raw, 1)[0]
            name = symbolize(target) or f"{target:#x}"
            if insn.offset == site:
                return f"call {name}: ftrace is on at this function (kprobes at +{site} go through it)"
            if first == X86_JMP32 and (original is None or changed):
                return f"jmp {name}: optimized kprobe, a jump to its detour buffer instead of a trap"
        if insn.offset == 0 and insn.raw in (X86_ENDBR64, X86_ENDBR_POISON):
            sealed = "sealed (nothing calls it indirectly) " if insn.raw == X86_ENDBR_POISON else ""
            return f"ENDBR64 {sealed}(IBT): a probe at +0 goes after it"
        if insn.offset == site and insn.raw == X86_NOP5:
            return "ftrace site: a 5-byte nop while nothing traces this function"
        return ""
    word = _word(insn)
    if word == ARM64_KPROBE_BRK:
        return "brk #0x4: kprobe breakpoint (KPROBES_BRK_IMM, then the instruction steps out of line)"
    if word == ARM64_MOV_X9_X30 and site == insn.end:
        return "ftrace: saves the return address in x9 for the call below"
    if insn.offset == site:
        if word == ARM64_NOP:
            return "ftrace site: a nop while nothing traces this function"
        if (word & 0xFC000000) == 0x94000000:  # BL
            target = insn.address + ((((word & 0x3FFFFFF) ^ 0x2000000) - 0x2000000) << 2)
            return f"bl {symbolize(target) or hex(target)}: ftrace is on at this function"
    return ""


def _word(insn: Instruction) -> int:
    return struct.unpack("<I", insn.raw)[0] if len(insn.raw) == 4 else -1
