"""doctor says only what it established on the running kernel, and "unknown, because
..." for what it could not."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from kpctl import doctor

DATA = Path(__file__).parent / "data" / "x86_64-6.1"
# The head of /proc/kallsyms as root in the x86_64 6.1 guest: per-CPU symbols at their
# offsets, from 0, before the kernel's text.
KALLSYMS_6_1 = """\
0000000000000000 A fixed_percpu_data
0000000000000000 A __per_cpu_start
0000000000001000 A cpu_debug_store
0000000000002000 A irq_stack_backing_store
ffffffff81000000 T startup_64
ffffffff81000000 T _stext
ffffffff81000070 T secondary_startup_64
"""


@pytest.fixture
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, bool]:
    """A tracefs with kprobe_events, no perf kprobe PMU, debugfs and securityfs as the
    test sets them."""
    tracefs = tmp_path / "tracing"
    (tracefs / "instances").mkdir(parents=True)
    (tracefs / "README").write_text((DATA / "README").read_text())
    (tracefs / "kprobe_events").write_text("")
    monkeypatch.setattr(doctor, "find_tracefs", lambda say=None: tracefs)
    monkeypatch.setattr(doctor, "DEBUGFS", tmp_path / "debug")
    monkeypatch.setattr(doctor, "KPROBE_PMU", tmp_path / "kprobe")
    monkeypatch.setattr(doctor, "read_lockdown", lambda: None)
    mounted = {"debugfs": False, "securityfs": False}
    monkeypatch.setattr(doctor, "_mounted", lambda fstype: mounted[fstype])
    return mounted


def rows() -> dict[str, doctor.Check]:
    return {c.name: c for c in doctor.run_checks()}


def test_kprobes_enabled_is_unknown_without_debugfs_and_fails_nothing(machine: dict[str, bool]) -> None:
    check = rows()["kprobes enabled"]
    assert (check.detail, check.required) == ("unknown, because debugfs is not mounted", False)


def test_kprobes_enabled_unreadable_under_a_mounted_debugfs_is_not_blamed_on_the_mount(machine: dict[str, bool]) -> None:
    machine["debugfs"] = True
    check = rows()["kprobes enabled"]
    assert check.detail.startswith("unknown, because ") and "not mounted" not in check.detail and not check.required


def test_kprobes_disabled_is_a_failure(machine: dict[str, bool], tmp_path: Path) -> None:
    (tmp_path / "debug" / "kprobes").mkdir(parents=True)
    (tmp_path / "debug" / "kprobes" / "enabled").write_text("0\n")
    check = rows()["kprobes enabled"]
    assert (check.ok, check.required) == (False, True)


def test_a_kernel_without_kprobes_is_told_so_not_to_mount_debugfs(machine: dict[str, bool], tmp_path: Path) -> None:
    (tmp_path / "tracing" / "kprobe_events").unlink()
    check = rows()["kprobes enabled"]
    assert (check.ok, check.fix) == (False, "the kernel needs CONFIG_KPROBES=y")
    assert check.detail == "this kernel has no kprobes: no kprobe_events, perf kprobe PMU or debugfs kprobes"


def test_lockdown_is_unknown_without_securityfs_not_absent(machine: dict[str, bool]) -> None:
    assert rows()["lockdown"].detail == "unknown, because securityfs is not mounted"
    machine["securityfs"] = True
    assert rows()["lockdown"].detail == "not built in (securityfs has no lockdown file)"


def test_no_kprobe_syntax_is_claimed_without_kprobe_events(machine: dict[str, bool], tmp_path: Path) -> None:
    assert rows()["symstr"].ok  # the recorded 6.1 README has it
    (tmp_path / "tracing" / "kprobe_events").unlink()
    checks = rows()
    assert "symstr" not in checks
    assert checks["kprobe syntax"].detail == "unknown, because this kernel has no kprobe_events"
    assert not checks["backend tracefs"].ok and checks["backend tracefs"].required


def test_each_counting_engine_has_a_row_that_says_why_not(machine: dict[str, bool], tmp_path: Path) -> None:
    checks = rows()
    assert checks["counting engine tracefs"].ok  # the recorded 6.1 README has hist triggers
    (tmp_path / "tracing" / "README").write_text("no triggers here\n")
    check = rows()["counting engine tracefs"]
    assert (check.ok, check.fix, check.required) == (False, "the kernel needs CONFIG_HIST_TRIGGERS=y", False)
    assert {"counting engine bpf", "counting engine bcc"} <= set(checks)


def test_a_file_root_may_access_but_not_open_is_not_readable(machine: dict[str, bool], tmp_path: Path) -> None:
    """os.access() says yes to root where the kernel refuses the open (EPERM under some
    lockdowns): only opening tells. A directory is such a path on any machine."""
    functions = tmp_path / "tracing" / "available_filter_functions"
    functions.write_text("vfs_read\n")
    assert rows()["funcs: traceable functions"].ok
    functions.unlink()
    functions.mkdir()
    check = rows()["funcs: traceable functions"]
    assert not check.ok and check.detail.startswith(f"{functions} cannot be read (")


def test_a_kernel_without_modules_gets_no_package_or_build_advice(
    machine: dict[str, bool], monkeypatch: pytest.MonkeyPatch,
) -> None:
    import kpctl.kmod

    monkeypatch.setattr(kpctl.kmod, "is_loaded", lambda: False)
    for module in (doctor, kpctl.kmod):
        monkeypatch.setattr(module, "modules_supported", lambda: False)
    checks = rows()
    headers, backend = checks["kmod: kernel headers"], checks["backend kmod"]
    assert headers.detail.endswith("not needed, this kernel cannot load modules") and headers.fix == ""
    assert "cannot load modules" in backend.detail and "kmod build" not in backend.fix
    for module in (doctor, kpctl.kmod):
        monkeypatch.setattr(module, "modules_supported", lambda: True)
    assert "apt install linux-headers-" in rows()["kmod: kernel headers"].fix


@pytest.fixture
def no_modules(machine: dict[str, bool], monkeypatch: pytest.MonkeyPatch) -> None:
    import kpctl.kmod

    monkeypatch.setattr(kpctl.kmod, "is_loaded", lambda: False)
    for module in (doctor, kpctl.kmod):
        monkeypatch.setattr(module, "modules_supported", lambda: False)


def test_a_kernel_without_modules_is_sent_to_the_tracefs_backend_where_it_has_kprobe_events(no_modules: None) -> None:
    checks = rows()
    assert checks["kmod: module loading"].fix == "this kernel cannot load modules: use the tracefs backend"
    assert checks["backend kmod"].fix == "the tracefs backend needs no module"


def test_a_kernel_without_modules_or_kprobe_events_is_told_what_it_lacks(no_modules: None, tmp_path: Path) -> None:
    (tmp_path / "tracing" / "kprobe_events").unlink()
    checks = rows()
    lacks = "this kernel has no kprobe_events for the tracefs backend either: it needs CONFIG_KPROBE_EVENTS=y"
    assert checks["kmod: module loading"].fix == lacks and checks["backend kmod"].fix == lacks


def test_the_fix_for_a_missing_capstone_installs_capstone_not_kpctl_which_is_another_project_on_pypi(
    machine: dict[str, bool], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "capstone", None)  # find_spec("capstone"): None
    check = rows()["inspect: capstone"]
    assert (check.ok, check.fix) == (False, "pip install capstone (or apt install python3-capstone)")


def test_kallsyms_addresses_are_real_where_per_cpu_symbols_at_0_come_first(
    machine: dict[str, bool], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    (tmp_path / "kallsyms").write_text(KALLSYMS_6_1)
    monkeypatch.setattr(doctor, "KALLSYMS", tmp_path / "kallsyms")
    assert rows()["kallsyms addresses"].ok


def test_kallsyms_addresses_hidden_from_root_are_shown_by_the_sysctl_not_by_root(
    machine: dict[str, bool], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    (tmp_path / "kallsyms").write_text(re.sub("^[0-9a-f]+", "0" * 16, KALLSYMS_6_1, flags=re.M))
    monkeypatch.setattr(doctor, "KALLSYMS", tmp_path / "kallsyms")
    monkeypatch.setattr(doctor.os, "geteuid", lambda: 0)
    check = rows()["kallsyms addresses"]
    assert (check.ok, check.fix) == (False, "sysctl kernel.kptr_restrict=1 (2 hides them from root too)")


def test_kallsyms_is_read_up_to_its_first_real_text_symbol_only(tmp_path: Path) -> None:
    (tmp_path / "kallsyms").write_text(KALLSYMS_6_1 + "a line that would not parse\n")
    assert doctor.kallsyms_shows_addresses(tmp_path / "kallsyms")
