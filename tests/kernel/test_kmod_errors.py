"""kpctl_kmod refuses bad requests with a clean errno and a message in the extended ack:
duplicates, unknown ids and symbols, blacklisted code, out-of-range values, and callers
without CAP_SYS_ADMIN."""
from __future__ import annotations

import errno
import platform
import subprocess
import sys
from pathlib import Path

import pytest
from kmod_fixtures import (
    WORKLOAD_SYSCALL,
    kmod,  # noqa: F401 (fixture)
    syscall_symbol,
)

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


def kallsyms_text() -> list[tuple[int, str]]:
    """Text symbols of the kernel and its modules, by address."""
    rows = (line.split() for line in Path("/proc/kallsyms").read_text().splitlines())
    return sorted((int(f[0], 16), f[2]) for f in rows if f[1] in "tT")


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


# A child that asks the module for a dump and an add and prints both errnos and messages.
_CHILD = """
import ctypes, sys
from kpctl.kmod.client import KmodClient, KmodError
drop = int(sys.argv[1])
if drop:
    # capset(2): keep only CAP_NET_ADMIN, which GENL_ADMIN_PERM alone would accept.
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)
    data = (ctypes.c_uint32 * 6)(1 << 12, 1 << 12, 0, 0, 0, 0)
    assert ctypes.CDLL(None, use_errno=True).capset(header, data) == 0, ctypes.get_errno()
with KmodClient() as c:
    for call in (c.dump, lambda: c.add("vfs_read", "kt_perm")):
        try:
            call()
            print("allowed")
        except KmodError as e:
            print(e.errno, e.message)
"""


def run_child(drop_caps: bool, user: str | None) -> list[str]:
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(int(drop_caps))], user=user,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False, cwd="/",
        env={"PYTHONPATH": str(Path(__file__).resolve().parents[2]), "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert proc.returncode == 0, proc.stdout
    return proc.stdout.splitlines()


def test_unprivileged_user_gets_eperm(kmod: KmodClient) -> None:
    lines = run_child(drop_caps=False, user="nobody")
    assert [line.split()[0] for line in lines] == [str(errno.EPERM)] * 2


def test_cap_net_admin_is_not_enough(kmod: KmodClient) -> None:
    lines = run_child(drop_caps=True, user=None)
    assert lines == [f"{errno.EPERM} cannot list probes: kpctl_kmod needs CAP_SYS_ADMIN",
                     f"{errno.EPERM} cannot add kt_perm at vfs_read: kpctl_kmod needs CAP_SYS_ADMIN"]
    assert kmod.dump() == []
