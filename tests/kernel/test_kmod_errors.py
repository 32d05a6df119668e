"""kpctl_kmod refuses bad requests with a clean errno and a message in the extended ack:
duplicates, unknown ids and symbols, blacklisted code, out-of-range values, and callers
without CAP_SYS_ADMIN."""
from __future__ import annotations

import errno
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import kallsyms_text, notrace_candidates, require, tracefs_refuses_as_notrace
from kmod_fixtures import (
    WORKLOAD_SYSCALL,
    built_module,
    kmod,  # noqa: F401 (fixture)
    reload_after,  # noqa: F401 (fixture)
    syscall_symbol,
)

from kpctl.kmod import loader
from kpctl.kmod.client import KmodClient, KmodError
from kpctl.kmod.messages import MAXACTIVE_MAX, NAME_MAX, Kind


def test_same_name_twice(kmod: KmodClient) -> None:
    kmod.add(syscall_symbol(WORKLOAD_SYSCALL), "kt_dup")
    with pytest.raises(KmodError, match="a probe with this name exists") as e:
        kmod.add(syscall_symbol("getppid"), "kt_dup")
    assert e.value.errno == errno.EEXIST


def test_same_point_twice(kmod: KmodClient) -> None:
    kmod.add(syscall_symbol(WORKLOAD_SYSCALL), "kt_one")
    with pytest.raises(KmodError, match="already has a probe of this kind") as e:
        kmod.add(syscall_symbol(WORKLOAD_SYSCALL), "kt_two")
    assert e.value.errno == errno.EEXIST
    # The other kind at the same point is another probe.
    kmod.add(syscall_symbol(WORKLOAD_SYSCALL), "kt_two", kind=Kind.RETURN)


def test_same_address_spelled_another_way(kmod: KmodClient) -> None:
    symbol = syscall_symbol(WORKLOAD_SYSCALL)
    first = kmod.add(symbol, "kt_first")
    start = next(address for address, name in kallsyms_text() if name == symbol)
    # kprobes moves sym+0 past an ENDBR64 (x86 kernels with IBT, as Debian's 6.12):
    # there sym+4 is the very same probe.
    offset = first.address - start
    assert offset in (0, 4)
    with pytest.raises(KmodError, match="this address already has a probe of this kind") as e:
        kmod.add(symbol, "kt_second", offset=offset)
    assert e.value.errno == errno.EEXIST


def test_offset_past_the_end_of_the_function(kmod: KmodClient) -> None:
    # The next symbol's first instruction: kprobes itself would plant a probe there.
    symbol = syscall_symbol(WORKLOAD_SYSCALL)
    text = kallsyms_text()
    index = next(i for i, (_, name) in enumerate(text) if name == symbol)
    # Not a __pfx_ symbol: the padding in front of each function on 6.12 x86 is no code.
    start = text[index][0]
    following = next(a for a, name in text[index + 1 :] if a > start and not name.startswith("__pfx_"))
    with pytest.raises(KmodError, match="offset is past the end of the symbol") as e:
        kmod.add(symbol, "kt_past", offset=following - start)
    assert e.value.errno == errno.ERANGE
    assert kmod.dump() == []


def test_return_probe_past_the_entry(kmod: KmodClient) -> None:
    symbol = syscall_symbol(WORKLOAD_SYSCALL)
    if platform.machine() == "aarch64":
        offset = 8  # past the two instructions of the ftrace site
    else:
        # Past the 5-byte ftrace nop, which follows an ENDBR64 on IBT kernels.
        entry = kmod.add(symbol, "kt_entry_here")
        offset = entry.address - next(a for a, name in kallsyms_text() if name == symbol) + 5
        kmod.remove(entry.id)
    with pytest.raises(KmodError, match="a return probe must be at the function's entry") as e:
        kmod.add(symbol, "kt_ret_off", offset=offset, kind=Kind.RETURN)
    assert e.value.errno == errno.EINVAL


def test_notrace_function_is_refused(kmod: KmodClient) -> None:
    """Like kprobe_events: the handlers emit trace events, so functions ftrace leaves
    alone (the tracing code itself) are refused, whatever kprobes would accept."""
    for name in notrace_candidates()[:400]:
        try:
            kmod.remove(kmod.add(name, "kt_notrace", enabled=False).id)
        except KmodError as e:
            if "notrace" not in e.message:
                continue  # not probeable for another reason
            assert e.errno == errno.EINVAL
            assert tracefs_refuses_as_notrace(name), f"the module calls {name} notrace, kprobe_events does not"
            return
        assert not tracefs_refuses_as_notrace(name), f"{name} is notrace and the module took it"
    raise AssertionError("no notrace function found among the candidates")


def test_return_probe_instances_have_a_budget(kmod: KmodClient, reload_after: None) -> None:
    loader.unload()
    loader.load(built_module().module, {"max_instances": 20})
    with KmodClient() as client:
        client.add(syscall_symbol(WORKLOAD_SYSCALL), "kt_inst_a", kind=Kind.RETURN, maxactive=16)
        with pytest.raises(KmodError, match="return probe instances would pass the max_instances budget") as e:
            client.add(syscall_symbol("getppid"), "kt_inst_b", kind=Kind.RETURN, maxactive=8)
        assert e.value.errno == errno.ENOSPC
        client.add(syscall_symbol("getppid"), "kt_inst_b", kind=Kind.RETURN, maxactive=4)
        # Entry probes preallocate nothing.
        client.add(syscall_symbol("getpid"), "kt_inst_c")


@pytest.mark.parametrize("op", ["remove", "enable", "disable", "get"])
def test_unknown_id(kmod: KmodClient, op: str) -> None:
    with pytest.raises(KmodError, match="no probe with this id") as e:
        getattr(kmod, op)(123456)
    assert e.value.errno == errno.ENOENT


def test_unknown_symbol(kmod: KmodClient) -> None:
    with pytest.raises(KmodError, match="symbol not in kallsyms") as e:
        kmod.add("kpctl_no_such_function", "kt_nosym")
    assert e.value.errno == errno.ENOENT


def blacklisted_function() -> str:
    """A function on the kprobe blacklist that kallsyms knows under one name."""
    text = {line.split()[2] for line in Path("/proc/kallsyms").read_text().splitlines() if line.split()[1] in "tT"}
    for line in Path("/sys/kernel/debug/kprobes/blacklist").read_text().splitlines():
        name = line.split()[-1]
        if name.isidentifier() and name in text:
            return name
    raise AssertionError("no usable entry in the kprobe blacklist")


def test_blacklisted_symbol(kmod: KmodClient) -> None:
    with pytest.raises(KmodError, match="kprobe blacklist") as e:
        kmod.add(blacklisted_function(), "kt_black")
    assert e.value.errno == errno.EINVAL


def test_maxactive_on_an_entry_probe(kmod: KmodClient) -> None:
    with pytest.raises(KmodError, match="maxactive applies to return probes only"):
        kmod.add(syscall_symbol(WORKLOAD_SYSCALL), "kt_maxact", maxactive=4)


@pytest.mark.parametrize("maxactive", [0, MAXACTIVE_MAX + 1])
def test_maxactive_out_of_range(kmod: KmodClient, maxactive: int) -> None:
    with pytest.raises(KmodError) as e:
        kmod.add(syscall_symbol(WORKLOAD_SYSCALL), "kt_range", kind=Kind.RETURN, maxactive=maxactive)
    assert e.value.errno == errno.ERANGE


@pytest.mark.parametrize("name", ["", "1abc", "a-b", "a b", "x" * (NAME_MAX + 1)])
def test_bad_names(kmod: KmodClient, name: str) -> None:
    with pytest.raises(KmodError) as e:
        kmod.add(syscall_symbol(WORKLOAD_SYSCALL), name)
    assert e.value.errno in (errno.EINVAL, errno.ERANGE)
    assert kmod.dump() == []


def test_longest_name(kmod: KmodClient) -> None:
    assert kmod.add(syscall_symbol(WORKLOAD_SYSCALL), "x" * NAME_MAX).name == "x" * NAME_MAX


# A child that asks the module for a dump and an add and prints both errnos and
# messages, as root with only some capabilities, or in a namespace of its own.
_CHILD = """
import ctypes, sys
from kpctl.kmod import loader
from kpctl.kmod.client import KmodClient, KmodError
libc = ctypes.CDLL(None, use_errno=True)
how = sys.argv[1]
if how.startswith("caps="):
    # capset(2): keep only these capabilities (effective and permitted).
    keep = sum(1 << int(cap) for cap in how[5:].split(","))
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)
    data = (ctypes.c_uint32 * 6)(keep & 0xffffffff, keep & 0xffffffff, 0, keep >> 32, keep >> 32, 0)
    assert libc.capset(header, data) == 0, ctypes.get_errno()
elif how in ("userns", "netns"):
    # unshare(2): root of a new user namespace, or in a new network namespace.
    assert libc.unshare({"userns": 0x10000000, "netns": 0x40000000}[how]) == 0, ctypes.get_errno()
with KmodClient() as c:
    for call in (c.dump, lambda: c.add("vfs_read", "kt_perm")):
        try:
            call()
            print("allowed")
        except KmodError as e:
            print(e.errno, e.message)
    for p in c.dump() if how == "netns" else []:
        c.remove(p.id)
"""
CAP_NET_ADMIN, CAP_SYS_ADMIN = 12, 21
REFUSED = [f"{errno.EPERM} cannot list probes: kpctl_kmod needs CAP_SYS_ADMIN",
           f"{errno.EPERM} cannot add kt_perm at vfs_read: kpctl_kmod needs CAP_SYS_ADMIN"]


def run_child(how: str, user: str | None = None) -> list[str]:
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, how], user=user,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False, cwd="/",
        env={"PYTHONPATH": str(Path(__file__).resolve().parents[2]), "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert proc.returncode == 0, proc.stdout
    return proc.stdout.splitlines()


def test_unprivileged_user_gets_eperm(kmod: KmodClient) -> None:
    assert run_child("all", user="nobody") == REFUSED


def test_cap_net_admin_is_not_enough(kmod: KmodClient) -> None:
    assert run_child(f"caps={CAP_NET_ADMIN}") == REFUSED
    assert kmod.dump() == []


def test_cap_sys_admin_alone_is_enough(kmod: KmodClient) -> None:
    assert run_child(f"caps={CAP_SYS_ADMIN}") == ["allowed", "allowed"]
    assert [p.name for p in kmod.dump()] == ["kt_perm"]


def test_root_of_a_user_namespace_is_refused(kmod: KmodClient) -> None:
    # All capabilities, but in its own user namespace: the probes are the machine's.
    assert run_child("userns") == REFUSED
    assert kmod.dump() == []


def test_root_in_another_network_namespace_is_allowed(kmod: KmodClient) -> None:
    # The family is there in every network namespace; the rule is the same.
    assert run_child("netns") == ["allowed", "allowed"]
    assert kmod.dump() == []


@pytest.mark.locks_down_the_kernel
def test_locked_down_kernel_refuses_probes(kmod: KmodClient) -> None:
    # Raised after the module is loaded (lockdown would refuse an unsigned module).
    lockdown = Path("/sys/kernel/security/lockdown")
    if not Path("/sys/kernel/security").is_mount():
        subprocess.run(["mount", "-t", "securityfs", "securityfs", "/sys/kernel/security"], check=True)
    require(lockdown.exists(), "kernel without the lockdown LSM")
    lockdown.write_text("confidentiality")
    with pytest.raises(KmodError, match="the kernel is locked down: kprobes are refused") as e:
        kmod.add(syscall_symbol(WORKLOAD_SYSCALL), "kt_locked")
    assert e.value.errno == errno.EPERM
