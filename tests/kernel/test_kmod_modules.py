"""kpctl_kmod's probes on the code of other modules, and where it stands beside
kprobe_events on names: a probe whose module goes says so and re-arms when the module
comes back; a name kallsyms has twice is refused as kprobe_events refuses it, MOD:SYM
names one; a clone without an ftrace site of its own is judged by its parent.

tests/kernel/modules/kpctl_target.ko is the module that comes and goes; kpctl_post.ko
has a kpctl_twin too.
"""
from __future__ import annotations

import errno
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import require
from kmod_fixtures import TRACEFS, kmod, load_test_module, unload_test_module  # noqa: F401

from kpctl.cli.main import cli
from kpctl.kmod.client import KmodClient, KmodError
from kpctl.kmod.messages import Kind, KmodProbe, KprobeFlag

TARGET = "kpctl_target"
PARAMETERS = Path("/sys/module") / TARGET / "parameters"
KPROBES_LIST = Path("/sys/kernel/debug/kprobes/list")
EVENTS = TRACEFS / "kprobe_events"


@pytest.fixture
def target(kmod: KmodClient) -> Iterator[None]:  # noqa: F811
    """kpctl_target loaded, and loaded again afterwards whatever the test did to it."""
    load_test_module(TARGET)
    yield
    load_test_module(TARGET)


def call_target(times: int) -> None:
    (PARAMETERS / "calls").write_text(str(times))


def probe(client: KmodClient, name: str) -> KmodProbe:
    (found,) = [p for p in client.dump() if p.name == name]
    return found


def kernel_addresses(symbol: str) -> list[str]:
    """Where debug/kprobes/list has probes on symbol."""
    return [line.split()[0] for line in KPROBES_LIST.read_text().splitlines() if f" {symbol}+" in line]


def kprobe_column(name: str) -> str:
    """What `kpctl list` says of the probe's kprobe state."""
    result = CliRunner().invoke(cli, ["list", "--json"])
    assert result.exit_code == 0, result.output
    (row,) = [r for r in json.loads(result.output) if r["name"] == name]
    return str(row["kprobe"])


def test_a_probe_on_a_module_says_gone_while_it_is_unloaded_and_re_arms_when_it_is_back(
        kmod: KmodClient, target: None) -> None:  # noqa: F811
    kmod.add("kpctl_target_fn", "kt_mod")
    call_target(5)
    assert probe(kmod, "kt_mod").hits == 5
    unload_test_module(TARGET)
    gone = probe(kmod, "kt_mod")
    assert KprobeFlag.GONE in gone.flags and gone.address == 0 and gone.module == TARGET
    assert kprobe_column("kt_mod") == f"gone: {TARGET} unloaded"
    # Out of the kernel's tables: no stale address left there.
    assert "kpctl_target_fn" not in KPROBES_LIST.read_text()

    load_test_module(TARGET)
    back = probe(kmod, "kt_mod")
    assert KprobeFlag.GONE not in back.flags and back.enabled
    assert kernel_addresses("kpctl_target_fn") == [f"{back.address:016x}"]
    call_target(3)
    assert probe(kmod, "kt_mod").hits == 8
    # A new probe on the reloaded function: the one rule per address and kind, nothing stale.
    kmod.add("kpctl_target_fn", "kt_mod_ret", kind=Kind.RETURN)
    call_target(2)
    assert probe(kmod, "kt_mod_ret").hits == 2


def test_a_disabled_probe_comes_back_disabled(kmod: KmodClient, target: None) -> None:  # noqa: F811
    added = kmod.add("kpctl_target_fn", "kt_off")
    kmod.disable(added.id)
    unload_test_module(TARGET)
    load_test_module(TARGET)
    back = probe(kmod, "kt_off")
    assert not back.enabled and KprobeFlag.DISABLED in back.flags
    call_target(4)
    assert probe(kmod, "kt_off").hits == 0
    kmod.enable(added.id)
    call_target(4)
    assert probe(kmod, "kt_off").hits == 4


def test_a_probe_on_an_unloaded_module_can_be_removed(kmod: KmodClient, target: None) -> None:  # noqa: F811
    added = kmod.add(f"{TARGET}:kpctl_target_fn", "kt_rm")
    unload_test_module(TARGET)
    kmod.remove(added.id)
    assert [p.name for p in kmod.dump()] == []
    load_test_module(TARGET)
    assert "kpctl_target_fn" not in KPROBES_LIST.read_text()


def tracefs_takes(symbol: str) -> int:
    """0 when kprobe_events takes a probe on symbol (removed again), else its errno."""
    fd = os.open(EVENTS, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, f"p:kt_parity/p {symbol}".encode())
    except OSError as e:
        return e.errno or 0
    else:
        os.write(fd, b"-:kt_parity/p")
        return 0
    finally:
        os.close(fd)


def test_a_name_kallsyms_has_twice_is_refused_as_kprobe_events_refuses_it(
        kmod: KmodClient, target: None) -> None:  # noqa: F811
    load_test_module("kpctl_post")
    instance = TRACEFS / "instances" / "kpctl"  # where kpctl's add records the module's hits
    had_instance = instance.exists()
    # 6.1.60's backport fails the write with EADDRNOTAVAIL, 6.12 with EINVAL; error_log says why.
    assert tracefs_takes("kpctl_twin") in (errno.EADDRNOTAVAIL, errno.EINVAL)
    assert "error: The symbol is not unique" in "\n".join((TRACEFS / "error_log").read_text().splitlines()[-3:])
    result = CliRunner().invoke(cli, ["add", "--backend", "kmod", "--name", "kt_twin", "kpctl_twin"])
    assert result.exit_code == 1, result.output
    addresses = re.findall(r"0x[0-9a-f]+ \[(\w+)\]", result.output)
    assert sorted(addresses) == ["kpctl_post", TARGET], result.output
    assert "kpctl_twin is not unique: 2 functions have this name" in result.output
    assert "name one as kpctl_post:kpctl_twin or kpctl_target:kpctl_twin" in result.output
    assert kmod.dump() == []
    # MOD:SYM names one, for both.
    assert tracefs_takes(f"{TARGET}:kpctl_twin") == 0
    result = CliRunner().invoke(cli, ["add", "--backend", "kmod", "--name", "kt_twin", f"{TARGET}:kpctl_twin"])
    assert result.exit_code == 0, result.output
    (PARAMETERS / "poke").write_text("1")
    twin = probe(kmod, "kt_twin")
    assert twin.hits == 1 and twin.module == TARGET
    # Removed as it was added, so kpctl's instance goes with its last probe.
    result = CliRunner().invoke(cli, ["rm", "kt_twin"])
    assert result.exit_code == 0, result.output
    assert instance.exists() == had_instance


def clones_without_their_own_site() -> list[str]:
    """Unique clone names (foo.cold, foo.part.0) that ftrace cannot trace themselves."""
    traceable = set((TRACEFS / "available_filter_functions").read_text().split())
    names: dict[str, int] = {}
    for line in Path("/proc/kallsyms").read_text().splitlines():
        fields = line.split()
        if fields[1] in "tT" and len(fields) == 3 and re.fullmatch(r"\w+\.(cold|part\.\d+)(\.\d+)?", fields[2]):
            names[fields[2]] = names.get(fields[2], 0) + 1
    return sorted(n for n, count in names.items() if count == 1 and n not in traceable)


def test_a_clone_without_an_ftrace_site_is_judged_by_its_parent_as_kprobe_events_judges_it(
        kmod: KmodClient) -> None:  # noqa: F811
    traceable = set((TRACEFS / "available_filter_functions").read_text().split())
    clones = clones_without_their_own_site()
    with_traceable_parent = [c for c in clones if c.split(".")[0] in traceable][:3]
    with_notrace_parent = [c for c in clones if c.split(".")[0] not in traceable][:2]
    require(bool(with_traceable_parent), "no clone without an ftrace site whose parent ftrace traces")
    verdicts = {}  # clone -> (kprobe_events takes it, the module takes it)
    for n, clone in enumerate(with_traceable_parent + with_notrace_parent):
        try:
            kmod.remove(kmod.add(clone, f"kt_clone{n}").id)
            module = True
        except KmodError:
            module = False
        verdicts[clone] = (tracefs_takes(clone) == 0, module)
    assert all(kernel == module for kernel, module in verdicts.values()), verdicts
    assert any(kernel for kernel, _ in verdicts.values()), verdicts
