"""kpctl bench without a kernel: the context it reports and how rows read. The timings
and their checks run in the guests (tests/kernel/test_bench.py)."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from kpctl import bench
from kpctl.bcc_glue import INSTALL_HINT
from kpctl.bench import Row, SyscallDriver, context, expected_mark, rows_as_table
from kpctl.inspect.disasm import Arch, kprobe_mark
from kpctl.tracefs import Tracefs

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


def test_an_arm64_cpu_is_named_by_its_midr_fields(tmp_path: Path) -> None:
    cpuinfo = "processor\t: 0\nBogoMIPS\t: 125.00\nCPU implementer\t: 0x41\nCPU part\t: 0xd0c\n\nprocessor\t: 1\n"
    assert context(DRIVER, machine(tmp_path, cpuinfo)).cpu == "CPU implementer 0x41, part 0xd0c"


def test_a_hypervisor_is_a_virtual_machine_not_emulation(tmp_path: Path) -> None:
    about = context(DRIVER, machine(tmp_path, "model name\t: AMD EPYC 7763\nflags\t: fpu hypervisor\n", "QEMU", "KVM"))
    assert about.virtualization == "virtual machine (QEMU KVM)"


@pytest.mark.parametrize(("code", "arch", "mark"), [
    ("cc1f440000", "x86_64", "int3"),  # the breakpoint over an ftrace site's nop
    ("e9a0ffffff", "x86_64", "jmp"),  # an optimized kprobe's jump to its detour buffer
    ("e8b0ffffff", "x86_64", "call"),  # the ftrace site in use
    ("0f1f440000", "x86_64", None),  # the ftrace site's nop: nothing patched
    ("800020d4", "arm64", "brk"),  # BRK #0x4
    ("05000094", "arm64", "bl"),  # the patchable entry's bl to ftrace
    ("1f2003d5", "arm64", None),  # nop
])
def test_live_code_is_read_as_what_patched_it(code: str, arch: Arch, mark: str | None) -> None:
    assert kprobe_mark(bytes.fromhex(code), arch) == mark


def test_each_kprobe_state_has_the_live_code_it_must_show() -> None:
    assert [expected_mark(flags, x86=True) for flags in ((), ("FTRACE",), ("OPTIMIZED",))] == ["int3", "call", "jmp"]
    assert [expected_mark(flags, x86=False) for flags in ((), ("FTRACE",))] == ["brk", "bl"]


def test_rows_show_cost_check_and_why_not() -> None:
    rows = rows_as_table([
        Row("kprobe at +0 (tracefs)", 812.4, 40.0, 790.0, 3.5, 600, 600, "FTRACE"),
        Row("kretprobe (tracefs)", 1500.0, 80.0, 1460.0, 5.9, 590, 600, ""),
        Row("BPF fentry", None, None, None, None, None, None, "kpctl_kmod has no BTF"),
    ])
    assert [(r["ns/hit"], r["hits"], r["what"]) for r in rows] == [
        ("812", "ok", "FTRACE"), ("1500", "590 of 600", ""), ("-", "", "not measured: kpctl_kmod has no BTF")]


class StandInDriver(bench.Driver):
    symbol, module, description = "kpctl_bench_target", None, "a stand-in"

    def run(self, calls: int) -> int:
        return 10 * calls


def rows_without_kprobe_events(tmp_path: Path, proc: Path = Path("/proc")) -> dict[str, bench.Row]:
    """bench's rows on a tracefs with no kprobe events (and the given /proc)."""
    (tmp_path / "instances").mkdir()
    (tmp_path / "README").write_text("tracing mini-HOWTO:\n")
    tracefs = Tracefs(tmp_path, debugfs=tmp_path, proc=proc)
    return {r.mechanism: r for r in bench.run_bench(bench.Bench(tracefs, StandInDriver(), 10, 2))}


def test_without_kprobe_events_every_kprobe_row_says_why(tmp_path: Path) -> None:
    rows = rows_without_kprobe_events(tmp_path)
    for name in ("kprobe event, disabled", "kprobe at +0 (tracefs)", "kprobe at an offset, int3/BRK", "kretprobe (tracefs)"):
        assert rows[name].detail == "this kernel has no kprobe events (CONFIG_KPROBE_EVENTS)"
    assert list((tmp_path / "instances").iterdir()) == []


def test_module_rows_on_a_kernel_without_modules_say_that_not_to_build_the_module(tmp_path: Path) -> None:
    rows = rows_without_kprobe_events(tmp_path, proc=tmp_path / "proc")  # no /proc/modules: no CONFIG_MODULES
    module_rows = [r for name, r in rows.items() if "module" in name]
    assert module_rows and all(r.detail == "needs the module, and this kernel cannot load modules (CONFIG_MODULES)"
                               for r in module_rows)


class UnbuildableBpf:
    """bcc.BPF without kernel headers: it says so on fd 1, then the build fails."""

    def __init__(self, text: str) -> None:
        os.write(1, b"Unable to find kernel headers.\n")
        raise Exception("Failed to compile BPF module <text>")

    @staticmethod
    def support_kfunc() -> bool:
        return True


@pytest.mark.parametrize(("bcc", "detail"), [
    (None, f"bcc is not installed for this Python\n{INSTALL_HINT}"),
    (SimpleNamespace(BPF=UnbuildableBpf),
     "bcc could not build the BPF program: Failed to compile BPF module <text>\nUnable to find kernel headers."),
])
def test_a_bpf_row_that_cannot_run_says_why_and_stdout_stays_the_bench_s(
    bcc: object, detail: str, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(sys.modules, "bcc", bcc)
    with pytest.raises(bench.NotMeasured) as e, bench.bpf_trampoline("fentry")(SimpleNamespace(driver=DRIVER)):  # type: ignore[arg-type]
        pass
    assert str(e.value) == detail
    assert capfd.readouterr() == ("", "")
