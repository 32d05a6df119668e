"""What funcs says of a function: only what the kernel's tables establish."""
from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from kpctl.symbols import KernelSymbols

KALLSYMS = """\
ffffffff81000000 T _stext
ffffffff81100000 T vfs_read
ffffffff81100400 t cleanup
ffffffff81100800 T vfs_write
ffffffff82000000 T _sinittext
ffffffff82000100 T start_kernel
ffffffff82100000 T _einittext
ffffffffc0100000 t cleanup\t[ext4]
ffffffffc0200000 t cleanup\t[xfs]
ffffffffc0396000 t kprobe_optinsn_page\t[__builtin__kprobes]
ffffffffc0397000 t bpf_prog_6deef7357e7b4530\t[bpf]
"""


@pytest.fixture
def tables(tmp_path: Path) -> Path:
    (tmp_path / "kallsyms").write_text(KALLSYMS)
    (tmp_path / "blacklist").write_text("0xffffffff81100800-0xffffffff81100900\tvfs_write\n")
    (tmp_path / "available_filter_functions").write_text(
        "vfs_read\nvfs_write\ncleanup\ncleanup [ext4]\ncleanup [xfs]\nvfs_twice\nmod_twice [ext4]\nmod_twice [xfs]\n")
    (tmp_path / "kprobe_events").write_text("")
    return tmp_path


def symbols(root: Path) -> KernelSymbols:
    return KernelSymbols(root / "kallsyms", root / "blacklist", root / "available_filter_functions", root / "kprobe_events",
                         [root / "config.gz", root / "config"])


def test_an_ordinary_function_is_probeable(tables: Path) -> None:
    status = symbols(tables).status("vfs_read")
    assert (status.probeable, status.reason) == (True, "")


def test_freed_init_code_is_not(tables: Path) -> None:
    status = symbols(tables).status("start_kernel")
    assert not status.probeable and status.reason.startswith("__init code, freed once the kernel booted")


def test_run_time_code_is_not_a_function(tables: Path) -> None:
    for name, module in (("kprobe_optinsn_page", "__builtin__kprobes"), ("bpf_prog_6deef7357e7b4530", "bpf")):
        status = symbols(tables).status(name)
        assert not status.probeable and f"[{module}]" in status.reason


def test_duplicates_in_modules_and_in_vmlinux_are_told_apart_differently(tables: Path) -> None:
    reason = symbols(tables).status("cleanup").reason  # in vmlinux, ext4 and xfs
    assert reason.startswith("not unique: 3 functions have this name; only an address tells them all apart "
                             "(MOD:SYM names the one in ext4, xfs)")
    (tables / "kallsyms").write_text(KALLSYMS + "ffffffff81100600 t vfs_twice\nffffffff81100700 t vfs_twice\n"
                                     "ffffffffc0100100 t mod_twice\t[ext4]\nffffffffc0200100 t mod_twice\t[xfs]\n")
    assert "; only an address tells them apart (" in symbols(tables).status("vfs_twice").reason
    assert "; MOD:SYM or an address tells them apart (" in symbols(tables).status("mod_twice").reason


def test_unreadable_tables_are_said_not_skipped(tables: Path) -> None:
    (tables / "blacklist").unlink()
    (tables / "available_filter_functions").unlink()
    reason = symbols(tables).status("vfs_write").reason
    assert "not checked against the kprobe blacklist" in reason and "not checked for notrace" in reason


@pytest.mark.parametrize(("config", "probeable", "says"), [
    (None, False, "unless built with CONFIG_KPROBE_EVENTS_ON_NOTRACE; its configuration cannot be read"),
    ("CONFIG_KPROBES=y\n# CONFIG_KPROBE_EVENTS_ON_NOTRACE is not set\n", False, "CONFIG_KPROBE_EVENTS_ON_NOTRACE is not set"),
    ("CONFIG_KPROBES=y\nCONFIG_KPROBE_EVENTS_ON_NOTRACE=y\n", True, "CONFIG_KPROBE_EVENTS_ON_NOTRACE allows it"),
], ids=["unknown", "distribution", "allowed"])
def test_a_notrace_function_is_probeable_only_where_the_config_allows(
    tables: Path, config: str | None, probeable: bool, says: str,
) -> None:
    (tables / "kallsyms").write_text(KALLSYMS + "ffffffff81100900 t rcu_dynticks_inc\n")
    if config is not None:
        (tables / "config").write_text(config)
    status = symbols(tables).status("rcu_dynticks_inc")
    assert status.probeable is probeable and status.reason.startswith("notrace (not in available_filter_functions")
    assert says in status.reason


def test_proc_config_gz_is_read_too(tables: Path) -> None:
    (tables / "kallsyms").write_text(KALLSYMS + "ffffffff81100900 t rcu_dynticks_inc\n")
    (tables / "config.gz").write_bytes(gzip.compress(b"CONFIG_KPROBE_EVENTS_ON_NOTRACE=y\n"))
    assert symbols(tables).status("rcu_dynticks_inc").probeable


def test_a_clone_is_judged_by_its_parent_as_the_kernel_does(tables: Path) -> None:
    (tables / "kallsyms").write_text(KALLSYMS + "ffffffff81100900 t vfs_read.cold\nffffffff81100a00 t vfs_write.isra.0\n")
    assert symbols(tables).status("vfs_read.cold").probeable  # its parent is traceable
    status = symbols(tables).status("vfs_write.isra.0")  # its parent is on the blacklist
    assert not status.probeable and "blacklist" in status.reason


def test_nothing_is_probeable_without_kprobe_events(tables: Path) -> None:
    (tables / "kprobe_events").unlink()
    status = symbols(tables).status("vfs_read")
    assert not status.probeable and "no kprobe_events" in status.reason


def test_the_empty_name_is_no_function(tables: Path) -> None:
    assert not symbols(tables).status("").probeable


@pytest.mark.parametrize("glob", ["vfs_*", "*", "[cv]*", "[!v]*", "?fs_rea[d]", "clean*", "*_*text", "[]x]*", "v[", "*bpf_*"])
def test_a_glob_before_the_parse_matches_what_it_matches_after(tables: Path, glob: str) -> None:
    # A glob alone is found in kallsyms' text; once it is parsed, in its table.
    fresh, parsed = symbols(tables), symbols(tables)
    parsed.by_name  # noqa: B018 (parse it)
    assert fresh.match(glob) == parsed.match(glob)
    assert fresh.probeable_matches(glob) == parsed.probeable_matches(glob)
    assert "by_name" not in fresh.__dict__
