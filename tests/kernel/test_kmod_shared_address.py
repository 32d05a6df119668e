"""kpctl_kmod's probes sharing an address with other probes, its own or another tool's.

On x86 a probe at a function's entry rides on ftrace, and an entry probe with a
post_handler that joins an ftrace-armed probe without one crashed the kernel when the
last of them went (kmod/kpctl_probes.c, kpctl_entry_handlers()). Each sequence here
crashed 6.1 and 6.12 before the module kept post_handlers off ftrace sites; the kmod
fixture fails a test whose kernel log shows a splat, and each test checks the kernel's
own probe list afterwards.
"""
from __future__ import annotations

import errno
import functools
import os
import platform
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kmod_fixtures import (  # noqa: F401 (fixtures)
    TRACEFS,
    WORKLOAD_SYSCALL,
    kmod,
    run_workload,
    syscall_symbol,
)
from perf import perf_kprobe

from kpctl.inspect.kcore import Kcore
from kpctl.kmod.client import KmodClient, KmodError
from kpctl.kmod.messages import Kind, KprobeFlag

KPROBES_LIST = Path("/sys/kernel/debug/kprobes/list")
OTHER_GROUP = "kt_other"  # stands for another tool's kprobe_events probes
SYMBOL = syscall_symbol(WORKLOAD_SYSCALL)
N = 20


def kernel_probes_at(symbol: str) -> list[str]:
    """debug/kprobes/list lines on symbol: reading it walks the kernel's whole table,
    where a probe freed but left behind faults."""
    return [line for line in KPROBES_LIST.read_text().splitlines() if f" {symbol}+" in line]


def kprobe_events(line: str) -> None:
    # Append, one command per write (guest-vms.md): never truncate other tools' probes.
    fd = os.open(TRACEFS / "kprobe_events", os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


class OtherTool:
    """A tracefs probe of another group, the way perf probe or a script makes one."""

    def __init__(self, name: str, target: str) -> None:
        self.name = name
        kprobe_events(f"p:{OTHER_GROUP}/{name} {target}")
        self.enable_file = TRACEFS / "events" / OTHER_GROUP / name / "enable"

    def enable(self, on: bool = True) -> None:
        self.enable_file.write_text("1" if on else "0")

    def remove(self) -> None:
        self.enable(False)
        kprobe_events(f"-:{OTHER_GROUP}/{self.name}")


@pytest.fixture
def other_tool() -> Iterator[Callable[[str, str], OtherTool]]:
    made: list[OtherTool] = []

    def make(name: str, target: str = SYMBOL) -> OtherTool:
        made.append(OtherTool(name, target))
        return made[-1]

    yield make
    for probe in made:
        if probe.enable_file.exists():
            probe.remove()


def entry_probe_rides_on_ftrace() -> bool:
    # x86 puts a probe at a function's ftrace site on ftrace; arm64 6.1/6.12 never do.
    return platform.machine() == "x86_64"


@pytest.mark.parametrize("removed_first", ["return", "entry"])
@pytest.mark.parametrize("added_first", ["return", "entry"])
def test_module_entry_and_return_probe_on_one_ftrace_site(
    kmod: KmodClient, added_first: str, removed_first: str
) -> None:
    made = {}
    for kind in (added_first, "entry" if added_first == "return" else "return"):
        made[kind] = kmod.add(SYMBOL, f"kt_{kind}", kind=Kind.RETURN if kind == "return" else Kind.ENTRY)
    run_workload(N)
    entry, ret = kmod.get(made["entry"].id), kmod.get(made["return"].id)
    assert (entry.hits, ret.hits, ret.ret_hits) == (N, N, N)
    # Between the two removals: disable and enable the one that stays.
    first, last = (made["return"], made["entry"]) if removed_first == "return" else (made["entry"], made["return"])
    kmod.remove(first.id)
    kmod.disable(last.id)
    kmod.enable(last.id)
    run_workload(N)
    assert kmod.get(last.id).hits == 2 * N
    kmod.remove(last.id)
    assert kernel_probes_at(SYMBOL) == []


def test_module_entry_probe_on_an_ftrace_site_has_no_post_handler(kmod: KmodClient) -> None:
    probe = kmod.add(SYMBOL, "kt_entry")
    run_workload(N)
    got = kmod.get(probe.id)
    if entry_probe_rides_on_ftrace():
        assert KprobeFlag.FTRACE in got.flags
        assert got.post_hits is None  # nothing is single-stepped on ftrace
    else:
        assert got.post_hits == N


def test_module_entry_probe_off_ftrace_keeps_its_post_handler(kmod: KmodClient, other_tool: Callable[..., OtherTool]) -> None:
    # An offset inside the function: a breakpoint on both arches (+8: past x86's 5-byte
    # ftrace nop and ENDBR, past arm64's two ftrace instructions). A tracefs probe is
    # there first, so the module's probe joins it.
    offset = 8 if platform.machine() == "aarch64" else _x86_instruction_boundary_after_ftrace()
    other = other_tool("kt_other_off", f"{SYMBOL}+{offset}")
    other.enable()
    probe = kmod.add(SYMBOL, "kt_off", offset=offset)
    run_workload(N)
    got = kmod.get(probe.id)
    assert KprobeFlag.FTRACE not in got.flags
    assert (got.hits, got.post_hits) == (N, N)
    kmod.remove(probe.id)
    other.remove()
    assert kernel_probes_at(SYMBOL) == []


def _x86_instruction_boundary_after_ftrace() -> int:
    """The offset of the instruction after the ftrace call site, which kprobes accept:
    +5 after the 5-byte nop, +9 with an ENDBR64 in front (IBT kernels)."""
    with open("/proc/kallsyms") as kallsyms:
        address = next(int(f[0], 16) for f in map(str.split, kallsyms) if f[2] == SYMBOL)
    with Kcore() as kcore:
        endbr = kcore.read(address, 4) == bytes.fromhex("f30f1efa")
    return 9 if endbr else 5


@pytest.mark.parametrize("module_enabled", [True, False], ids=["enabled", "disabled-at-registration"])
def test_other_tools_armed_probe_then_a_module_entry_probe(
    kmod: KmodClient, other_tool: Callable[..., OtherTool], module_enabled: bool
) -> None:
    other = other_tool("kt_other_entry")
    other.enable()
    probe = kmod.add(SYMBOL, "kt_joins", enabled=module_enabled)
    run_workload(N)
    if not module_enabled:
        kmod.enable(probe.id)
        run_workload(N)
        kmod.disable(probe.id)
    assert kmod.get(probe.id).hits == N
    kmod.remove(probe.id)
    run_workload(N)
    other.remove()
    assert kernel_probes_at(SYMBOL) == []


def test_perf_kprobe_armed_first_then_a_module_entry_probe(kmod: KmodClient) -> None:
    # The kprobe PMU is how perf, bcc and bpftrace attach: the module's probe joins it,
    # leaves, and then the perf kprobe, the last one there, is disarmed.
    fd = perf_kprobe(SYMBOL)
    try:
        probe = kmod.add(SYMBOL, "kt_after_perf")
        run_workload(N)
        assert kmod.get(probe.id).hits == N
        kmod.remove(probe.id)
    finally:
        os.close(fd)
    assert kernel_probes_at(SYMBOL) == []


def test_other_tools_probe_removed_while_the_module_probe_stays(
    kmod: KmodClient, other_tool: Callable[..., OtherTool]
) -> None:
    other = other_tool("kt_other_first")
    other.enable()
    ret = kmod.add(SYMBOL, "kt_stays_ret", kind=Kind.RETURN)
    entry = kmod.add(SYMBOL, "kt_stays")
    other.remove()
    run_workload(N)
    assert (kmod.get(entry.id).hits, kmod.get(ret.id).ret_hits) == (N, N)
    kmod.remove(entry.id)
    kmod.remove(ret.id)
    assert kernel_probes_at(SYMBOL) == []


STRESS_SECONDS = float(os.environ.get("KPCTL_STRESS_SECONDS", "5"))
STRESS_MIN_OPERATIONS = 10  # per thread, however slow the machine: the stress goes on until then
STRESS_SYSCALLS = ("getppid", "getpid", "getuid", "sched_get_priority_max")


def test_stress_clients_and_tracefs_on_shared_addresses(kmod: KmodClient) -> None:
    """Netlink clients in threads add, enable, disable and remove entry and return probes
    on a few hot syscalls, a thread toggles tracefs probes on the same functions, and a
    workload calls them, for a bounded time. Nothing may be left, and the kernel log must
    stay clean (the kmod fixture)."""
    symbols = [syscall_symbol(name) for name in STRESS_SYSCALLS]
    stop = time.monotonic() + STRESS_SECONDS
    errors: list[Exception] = []
    operations = [0]

    def guarded(body: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                body()
            except (KmodError, OSError, AssertionError) as e:  # reported by the main thread
                errors.append(e)
        return run

    def client(index: int) -> None:
        rng = random.Random(index)
        mine: set[int] = set()
        done = 0
        with KmodClient() as c:
            while time.monotonic() < stop or done < STRESS_MIN_OPERATIONS:
                done += 1
                action = rng.choice(("add", "add", "remove", "toggle"))
                try:
                    if action == "add" or not mine:
                        kind = rng.choice((Kind.ENTRY, Kind.RETURN))
                        probe = c.add(rng.choice(symbols), f"kt_s{index}_{operations[0]}", kind=kind,
                                      enabled=rng.random() < 0.8)
                        mine.add(probe.id)
                    elif action == "remove":
                        probe_id = rng.choice(sorted(mine))
                        mine.discard(probe_id)
                        c.remove(probe_id)
                    else:
                        probe_id = rng.choice(sorted(mine))
                        (c.enable if rng.random() < 0.5 else c.disable)(probe_id)
                except KmodError as e:
                    # Refusals are expected (one probe of a kind per address); crashes are not.
                    if e.errno != errno.EEXIST:
                        raise
                operations[0] += 1
            for probe_id in mine:
                c.remove(probe_id)

    def tracefs_toggler() -> None:
        rng = random.Random(99)
        live: dict[str, OtherTool] = {}
        done = 0
        while time.monotonic() < stop or done < STRESS_MIN_OPERATIONS:
            done += 1
            symbol = rng.choice(symbols)
            name = f"kt_other_{symbol.rsplit('_sys_', 1)[1]}"
            if name in live:
                live.pop(name).remove()
            else:
                live[name] = OtherTool(name, symbol)
                live[name].enable()
            operations[0] += 1
            time.sleep(0.01)
        for probe in live.values():
            probe.remove()

    def workload() -> None:
        while time.monotonic() < stop:
            os.getppid(), os.getpid(), os.getuid()
            run_workload(1)

    threads = [threading.Thread(target=guarded(functools.partial(client, i))) for i in range(4)]
    threads += [threading.Thread(target=guarded(tracefs_toggler)), threading.Thread(target=guarded(workload))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=STRESS_SECONDS + 120)
        assert not t.is_alive(), "a stress thread did not finish"
    assert errors == []
    assert operations[0] >= 5 * STRESS_MIN_OPERATIONS
    assert kmod.dump() == []
    assert OTHER_GROUP not in (TRACEFS / "kprobe_events").read_text()
    for symbol in symbols:
        assert kernel_probes_at(symbol) == []
