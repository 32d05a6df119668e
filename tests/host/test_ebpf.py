"""kpctl's BPF instructions without a kernel: their bytes as the kernel reads them, labels
turned into offsets, and the verifier's log cut to its reason. Whether the programs load
and count right is for the kernel tests (tests/kernel/test_count.py)."""
from __future__ import annotations

import pytest

from kpctl.ebpf.asm import (
    ADD,
    JEQ,
    MOV,
    R0,
    R1,
    R6,
    R10,
    Label,
    alu64,
    assemble,
    atomic_add,
    call,
    exit_,
    goto,
    jump,
    load,
    load_imm64,
    load_map,
    store_imm,
)
from kpctl.ebpf.programs import CountMaps, count_program, this_arch
from kpctl.ebpf.syscalls import verifier_summary
from kpctl.model import parse_fetch_arg


def words(code: bytes) -> list[str]:
    return [code[i:i + 8].hex() for i in range(0, len(code), 8)]


def test_instructions_encode_as_the_kernel_reads_them() -> None:
    # As llvm-objdump prints them: r0 = 0; r1 += -8; *(u64 *)(r10 - 8) = 0; r0 = *(u64 *)(r6 + 112);
    # lock *(u64 *)(r0 + 0) += r1; call 14; exit
    assert words(assemble([
        alu64(MOV, R0, imm=0), alu64(ADD, R1, imm=-8), store_imm(8, R10, -8, 0), load(8, R0, R6, 112),
        atomic_add(8, R0, 0, R1), call(14), exit_(),
    ])) == ["b700000000000000", "07010000f8ffffff", "7a0af8ff00000000", "7960700000000000",
            "db10000000000000", "850000000e000000", "9500000000000000"]


def test_a_map_and_a_64_bit_constant_take_two_instructions() -> None:
    assert words(assemble(load_map(R1, 5))) == ["1811000005000000", "0000000000000000"]
    assert words(assemble(load_imm64(R1, 0xFFFFFFFF81000000))) == ["1801000000000081", "00000000ffffffff"]


def test_jumps_count_instructions_to_their_label_and_a_double_load_as_two() -> None:
    code = assemble([jump(JEQ, R0, "end", imm=0), *load_map(R1, 3), goto("end"), Label("end"), exit_()])
    assert words(code)[0] == "1500030000000000"  # over the two halves of the load and the goto
    assert words(code)[3] == "0500000000000000"


def test_a_label_defined_twice_is_a_bug_caught_at_assembly() -> None:
    with pytest.raises(ValueError, match="label x defined twice"):
        assemble([Label("x"), Label("x")])


def test_every_count_program_ends_in_exit_and_reads_its_cookie() -> None:
    for by in (None, "pid", "comm", "cpu", "stack", "n=$arg3:u32", "p=+8(+0($arg2)):s16", "s=$stack2"):
        split = parse_fetch_arg(by) if by and "=" in by else by
        code = words(assemble(count_program(CountMaps(3, 4, 5), split, False, False, this_arch())))
        assert code[-1] == "9500000000000000" and "85000000ae000000" in code, by  # call 174: bpf_get_attach_cookie


def test_the_verifiers_reason_is_its_last_line_before_the_statistics() -> None:
    log = ("0: (bf) r6 = r1\n1: (79) r1 = *(u64 *)(r10 -8)\ninvalid read from stack off -8+0 size 8\n"
           "processed 2 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0 mark_read 0\n")
    assert verifier_summary(log) == "invalid read from stack off -8+0 size 8"
