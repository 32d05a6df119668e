"""kpctl bench without a kernel: the context it reports and how rows read. The timings
and their checks run in the guests (tests/kernel/test_bench.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from kpctl import bench
from kpctl.bench import Row, SyscallDriver, context, kprobe_flags, rows_as_table

DRIVER = SyscallDriver("__x64_sys_getpgid", "no module")


def machine(tmp_path: Path, cpuinfo: str, vendor: str = "", product: str = "") -> Path:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cpuinfo").write_text(cpuinfo)
    dmi = tmp_path / "sys/class/dmi/id"
    dmi.mkdir(parents=True)
    (dmi / "sys_vendor").write_text(vendor)
    (dmi / "product_name").write_text(product)
    vulnerabilities = tmp_path / "sys/devices/system/cpu/vulnerabilities"
    vulnerabilities.mkdir(parents=True)
    (vulnerabilities / "meltdown").write_text("Not affected\n")
    (vulnerabilities / "spectre_v2").write_text("Mitigation: Retpolines\n")
    return tmp_path


def test_an_emulated_cpu_is_said_to_compare_only_ratios(tmp_path: Path) -> None:
    about = context(DRIVER, machine(tmp_path, "model name\t: QEMU Virtual CPU version 2.5+\nflags\t: fpu\n",
                                    "QEMU", "Standard PC (i440FX + PIIX, 1996)"))
    assert about.cpu == "QEMU Virtual CPU version 2.5+"
    assert about.virtualization.startswith("emulated (QEMU Standard PC (i440FX + PIIX, 1996)): absolute times")
    assert about.mitigations == "spectre_v2: Mitigation: Retpolines"
    assert about.driver == "a getpgid() loop from user space, probes on __x64_sys_getpgid (no module)"


def test_a_hypervisor_is_a_virtual_machine_not_emulation(tmp_path: Path) -> None:
    about = context(DRIVER, machine(tmp_path, "model name\t: AMD EPYC 7763\nflags\t: fpu hypervisor\n", "QEMU", "KVM"))
    assert about.virtualization == "virtual machine (QEMU KVM)"


def test_kprobe_flags_are_read_per_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    listing = tmp_path / "list"
    listing.write_text("ffffffffc0a01010  k  kpctl_bench_target+0x0 kpctl_kmod [FTRACE]\n"
                       "ffffffffc0a01019  k  kpctl_bench_target+0x9 kpctl_kmod [OPTIMIZED]\n"
                       "ffffffffc0a01010  r  kpctl_bench_target+0x0 kpctl_kmod [FTRACE]\n"
                       "ffffffff81234560  k  vfs_read+0x0    \n")
    monkeypatch.setattr(bench, "KPROBES_LIST", listing)
    assert kprobe_flags("kpctl_bench_target", 9) == [["k", "OPTIMIZED"]]
    assert kprobe_flags("vfs_read") == [["k"]]
    assert [state[0] for state in kprobe_flags("kpctl_bench_target")] == ["k", "r"]


def test_rows_show_cost_check_and_why_not() -> None:
    rows = rows_as_table([
        Row("kprobe at +0 (tracefs)", 812.4, 40.0, 3.5, 600, 600, "FTRACE"),
        Row("kretprobe (tracefs)", 1500.0, 80.0, 5.9, 590, 600, ""),
        Row("BPF fentry", None, None, None, None, None, "kpctl_kmod has no BTF"),
    ])
    assert [(r["ns/hit"], r["hits"], r["what"]) for r in rows] == [
        ("812", "ok", "FTRACE"), ("1500", "590 of 600", ""), ("-", "", "not measured: kpctl_kmod has no BTF")]
