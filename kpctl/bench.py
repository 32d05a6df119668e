"""`kpctl bench`: what one hit of each probe mechanism costs on the running kernel.

A driver makes hits cheaply and countably: the bundled module calls a noinline function
of its own N times in the kernel (KPCTL_CMD_BENCH) and says how long that took; where
the module cannot be loaded, a loop of getpgid() calls from here is the driver, and the
probed function is the syscall's. Each mechanism is set up on the driver's function,
timed over several runs, checked (its own hit count against the calls made, the
kprobe's state in debug/kprobes/list against what the row claims, and the live code at
the kprobe's address, read through /proc/kcore as `kpctl inspect` reads it, against
that state) and removed, however the bench ends: each row is a session of the process's
own (gc.owned_session()), gone before the next row. The optimization sysctl is restored.
"""
from __future__ import annotations

import errno
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kpctl.backends.tracefs import TracefsBackend
from kpctl.bcc_glue import compile_program, import_bcc
from kpctl.errors import KpctlError
from kpctl.gc import owned_session
from kpctl.inspect.arm import OPTIMIZATION_SYSCTL
from kpctl.inspect.disasm import host_arch, kprobe_mark
from kpctl.inspect.kcore import Kcore
from kpctl.model import Probe, Target
from kpctl.sessions import Session
from kpctl.tracefs import KprobeState, Tracefs

_OFFSETS = range(1, 48)  # where an offset probe may go: the first the kernel takes past the entry


class NotMeasured(Exception):
    """This mechanism cannot run here; the message says why."""


@dataclass(frozen=True)
class Row:
    mechanism: str
    ns_per_hit: float | None  # median above the unprobed run's, per call
    spread: float | None  # max - min of the runs, per call
    best: float | None  # the fastest run above the fastest unprobed one: what noise cannot inflate
    ratio: float | None  # the median run against the unprobed one
    hits: int | None  # what the mechanism counted
    expected: int | None  # the calls it should have counted
    detail: str  # what the kprobe was (from debug/kprobes/list), or why it was not measured

    @property
    def checked(self) -> bool | None:
        return None if self.hits is None or self.expected is None else self.hits == self.expected


@dataclass(frozen=True)
class Context:
    kernel: str
    arch: str
    cpu: str
    virtualization: str
    mitigations: str
    driver: str


class Driver:
    """Calls of the probed function: run(n) makes n of them and returns the ns taken."""
    symbol: str  # the function, as kallsyms names it
    module: str | None  # its module, for tracefs's MODULE:SYMBOL
    description: str

    def run(self, calls: int) -> int:
        raise NotImplementedError


class ModuleDriver(Driver):
    def __init__(self, client: Any) -> None:
        from kpctl.kmod import MODULE
        from kpctl.kmod.messages import BENCH_TARGET

        self.client = client
        self.symbol, self.module = BENCH_TARGET, MODULE
        self.description = f"{MODULE} calls {BENCH_TARGET}() in a loop in the kernel"

    def run(self, calls: int) -> int:
        from kpctl.kmod.client import KmodError
        from kpctl.signals import StopRequested

        try:
            return int(self.client.bench(calls))
        except KmodError as e:
            # The module's loop stops at any signal (Ctrl-C, SIGTERM): stopped, as by them.
            if e.errno == errno.EINTR:
                raise StopRequested from None
            raise


class SyscallDriver(Driver):
    def __init__(self, symbol: str, why: str) -> None:
        self.symbol, self.module = symbol, None
        self.description = f"a getpgid() loop from user space, probes on {symbol} ({why})"

    def run(self, calls: int) -> int:
        started = time.perf_counter_ns()
        for _ in range(calls):
            os.getpgid(0)
        return time.perf_counter_ns() - started


@dataclass
class Bench:
    tracefs: Tracefs
    driver: Driver
    calls: int
    runs: int
    offset: int | None = None  # of offset probes, found once
    session: Session = field(default_factory=lambda: Session.mine("bench"))

    @property
    def group(self) -> str:
        return self.session.group

    @property
    def instance(self) -> str:
        return self.session.instance

    @property
    def target(self) -> Target:
        return Target(symbol=self.driver.symbol, module=self.driver.module)

    def timed(self) -> list[float]:
        """ns per call of each run, after one run that warms caches."""
        self.driver.run(self.calls)
        return [self.driver.run(self.calls) / self.calls for _ in range(self.runs)]

    @property
    def made(self) -> int:
        """The calls timed() makes."""
        return self.calls * (self.runs + 1)


# A mechanism: set up for the block, which yields (hit counter, what the kprobe was).
Setup = Callable[[Bench], AbstractContextManager[tuple[Callable[[], int], str]]]


def _tracefs_probe(bench: Bench, kind: str, offset: int = 0, enable: bool = True) -> TracefsBackend:
    """A probe of the row's session (which removes it)."""
    if not bench.tracefs.path("kprobe_events").exists():
        raise NotMeasured("this kernel has no kprobe events (CONFIG_KPROBE_EVENTS)")
    backend = TracefsBackend(bench.tracefs, group=bench.group, instance=bench.instance)
    bench.tracefs.make_instance(bench.instance)
    probe = Probe("r" if kind == "r" else "p", Target(bench.target.symbol, offset, bench.target.module),
                  event="bench", group=bench.group)
    backend.add([probe], enable=enable)
    return backend


def _profile_hits(backend: TracefsBackend) -> int:
    return sum(s.hits for s in backend.stats())


def expected_mark(flags: Sequence[str], x86: bool) -> str:
    """What the live code at a kprobe's address must be, given its flags (kprobe_mark())."""
    if "FTRACE" in flags:
        return "call" if x86 else "bl"
    if "OPTIMIZED" in flags:
        return "jmp"
    return "int3" if x86 else "brk"


def _live_code(state: KprobeState) -> str:
    """The live code at the kprobe's address, checked against its flags; NotMeasured
    when they disagree (the optimizer flags a kprobe before it writes the jump)."""
    try:
        arch = host_arch()
        with Kcore() as kcore:
            mark = kprobe_mark(kcore.read(state.address, 4), arch)
    except KpctlError as e:
        return f"live code not read: {e.message}"
    want = expected_mark(state.flags, arch == "x86_64")
    if mark != want:
        raise NotMeasured(f"debug/kprobes/list says {' '.join(state.flags) or 'int3/BRK'}, "
                          f"but the live code at {state.address:#x} is {mark or 'not patched'}")
    return f"live code {mark}"


def _described(bench: Bench, offset: int, claim: str | None) -> str:
    """The kprobe's flags and live code; NotMeasured when they are not what the row
    claims."""
    listed = bench.tracefs.kprobe_states()
    places = [offset] if offset else range(16)  # +0 moves past the entry's landing pad (x86 ENDBR: +4)
    states = next((found for at in places
                   if (found := [s for s in listed if s.where == f"{bench.driver.symbol}+{at:#x}"])), [])
    flags = sorted({f for state in states for f in state.flags})
    if claim is not None and claim not in flags:
        raise NotMeasured(f"the kprobe is {' '.join(flags) or 'a plain kprobe'}, not {claim}")
    what = " ".join(flags) or "int3/BRK"
    if not states or "DISABLED" in flags:
        return what
    return f"{what}, {'; '.join(sorted({_live_code(state) for state in states}))}"


@contextmanager
def entry_kprobe(bench: Bench) -> Iterator[tuple[Callable[[], int], str]]:
    backend = _tracefs_probe(bench, "p")
    yield (lambda: _profile_hits(backend)), _described(bench, 0, None)


@contextmanager
def return_kprobe(bench: Bench) -> Iterator[tuple[Callable[[], int], str]]:
    backend = _tracefs_probe(bench, "r")
    yield (lambda: _profile_hits(backend)), _described(bench, 0, None)


@contextmanager
def disabled_event(bench: Bench) -> Iterator[tuple[Callable[[], int], str]]:
    backend = _tracefs_probe(bench, "p", enable=False)
    yield (lambda: _profile_hits(backend)), "defined, never enabled"


def _probe_offset(bench: Bench) -> int:
    """The first offset past the entry where the kernel takes a kprobe that is not on
    the ftrace site (an x86 probe must sit on an instruction boundary)."""
    if bench.offset is not None:
        return bench.offset
    for offset in _OFFSETS:
        try:
            # Called before its row sets anything up: the session's end takes this try only.
            with owned_session(bench.tracefs, "bench"):
                _tracefs_probe(bench, "p", offset, enable=False)
                if "FTRACE" in _described(bench, offset, None):
                    continue
        except KpctlError:
            continue
        bench.offset = offset
        return offset
    raise NotMeasured(f"no offset in {bench.driver.symbol} took a kprobe")


@contextmanager
def _optimization(value: str) -> Iterator[None]:
    try:
        before = OPTIMIZATION_SYSCTL.read_text().strip()
    except OSError:
        if value == "0":  # nothing to turn off: every kprobe here is int3/BRK (arm64)
            yield
            return
        raise NotMeasured("this kernel has no jump optimization (no debug.kprobes-optimization)") from None
    if value == before:
        yield
        return
    from kpctl.owners import SavedSettings

    # Recorded first: a SIGKILLed bench leaves the machine's setting to gc to restore.
    with SavedSettings().changed(OPTIMIZATION_SYSCTL, value, "bench"):
        yield


@contextmanager
def offset_kprobe(bench: Bench, optimized: bool) -> Iterator[tuple[Callable[[], int], str]]:
    offset = _probe_offset(bench)
    with _optimization("1" if optimized else "0"):
        backend = _tracefs_probe(bench, "p", offset)
        if optimized:  # the optimizer runs a few jiffies after arming: wait for its jump
            deadline = time.monotonic() + 10
            while True:
                try:
                    what = _described(bench, offset, "OPTIMIZED")
                    break
                except NotMeasured:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
        else:
            what = _described(bench, offset, None)
            if "OPTIMIZED" in what or "FTRACE" in what:
                raise NotMeasured(f"the kprobe is {what}")
        yield (lambda: _profile_hits(backend)), f"+{offset:#x} {what}"


@contextmanager
def function_tracer(bench: Bench) -> Iterator[tuple[Callable[[], int], str]]:
    tracefs = bench.tracefs
    tracefs.make_instance(bench.instance)
    if not tracefs.path(f"{bench.instance}/set_ftrace_filter").exists():
        raise NotMeasured("instances have no function tracer here (CONFIG_FUNCTION_TRACER)")
    try:
        tracefs.write_value(f"{bench.instance}/set_ftrace_filter", bench.driver.symbol)
        tracefs.write_value(f"{bench.instance}/current_tracer", "function")
    except KpctlError as e:
        raise NotMeasured(f"the function tracer refused {bench.driver.symbol}: {e.message}") from None
    # Removing the instance (the session's end) stops its tracer and drops its filter.
    yield (lambda: _buffer_writes(tracefs, bench.instance)), "ftrace function tracer"


def _buffer_writes(tracefs: Tracefs, instance: str) -> int:
    """Events written to an instance's buffer: those in it and those overwritten."""
    total = 0
    for stats in tracefs.path(f"{instance}/per_cpu").glob("cpu*/stats"):
        for line in stats.read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("entries", "overrun"):
                total += int(value)
    return total


@contextmanager
def fprobe_event(bench: Bench) -> Iterator[tuple[Callable[[], int], str]]:
    tracefs = bench.tracefs
    if "f[:[<group>/][<event>]]" not in tracefs.readme:
        raise NotMeasured("this kernel has no fprobe events (f:, CONFIG_FPROBE_EVENTS)")
    tracefs.make_instance(bench.instance)
    tracefs.append_command("dynamic_events", f"f:{bench.group}/fentry {bench.driver.symbol}")
    tracefs.write_value(f"{bench.instance}/events/{bench.group}/fentry/enable", "1")
    yield (lambda: _buffer_writes(tracefs, bench.instance)), "fprobe (ftrace-based)"


def module_probe(is_return: bool) -> Setup:
    @contextmanager
    def setup(bench: Bench) -> Iterator[tuple[Callable[[], int], str]]:
        if not isinstance(bench.driver, ModuleDriver):
            from kpctl.kmod import modules_supported

            if not modules_supported(bench.tracefs.proc):
                raise NotMeasured("needs the module, and this kernel cannot load modules (CONFIG_MODULES)")
            raise NotMeasured("measured with the module's driver only (kpctl kmod build; --driver module)")
        from kpctl.kmod.messages import Kind

        client = bench.driver.client
        probe = client.add(bench.driver.symbol, bench.session.member(int(is_return)),
                           kind=Kind.RETURN if is_return else Kind.ENTRY)

        def hits() -> int:
            got = client.get(probe.id)
            return int(got.ret_hits if is_return else got.hits)

        yield hits, _described(bench, 0, None)
    return setup


_BPF_COUNTER = """
BPF_ARRAY(kpctl_hits, u64, 1);
int kpctl_count(void *ctx) {
    u32 key = 0;
    u64 *n = kpctl_hits.lookup(&key);
    if (n)
        __sync_fetch_and_add(n, 1);
    return 0;
}
"""


def bpf_kprobe(is_return: bool) -> Setup:
    """A BPF program counting hits in a map, on a perf kprobe: kpctl's own (no compiler),
    as the bpf counting engine attaches them."""
    @contextmanager
    def setup(bench: Bench) -> Iterator[tuple[Callable[[], int], str]]:
        from kpctl.ebpf.asm import assemble
        from kpctl.ebpf.programs import hit_counter
        from kpctl.ebpf.syscalls import ARRAY, BpfError, Map, attach_perf_event, load_program, open_kprobe

        with ExitStack() as stack:
            try:
                counter = Map(ARRAY, 4, 8, 1, "kpctl_hits")
                stack.callback(counter.close)
                program = load_program(assemble(hit_counter(counter.fd)), "kpctl_bench")
                stack.callback(os.close, program)
                stack.callback(os.close, attach_perf_event(program, open_kprobe(bench.driver.symbol, is_return), 0))
            except BpfError as e:
                raise NotMeasured(e.message) from None

            def hits() -> int:
                return int.from_bytes(counter.lookup(bytes(4)) or bytes(8), "little")

            yield hits, _described(bench, 0, None)
    return setup


def bpf_trampoline(kind: str) -> Setup:
    """fentry or fexit through bcc (kpctl's loader does kprobes only)."""
    @contextmanager
    def setup(bench: Bench) -> Iterator[tuple[Callable[[], int], str]]:
        symbol = bench.driver.symbol
        try:
            bcc = import_bcc()
            if not bcc.BPF.support_kfunc():
                raise NotMeasured("this kernel or bcc has no fentry/fexit (BPF trampolines)")
            if bench.driver.module and not Path(f"/sys/kernel/btf/{bench.driver.module}").exists():
                raise NotMeasured(f"{bench.driver.module} has no BTF (an out-of-tree build without pahole)")
            macro = "KFUNC_PROBE" if kind == "fentry" else "KRETFUNC_PROBE"
            program = compile_program(_BPF_COUNTER.replace("int kpctl_count(void *ctx) {", f"{macro}({symbol}) {{"))
        except KpctlError as e:  # no bcc, or a build that failed: the row says why, as the CLI would
            raise NotMeasured(f"{e.message}\n{e.hint}" if e.hint else e.message) from None
        try:
            def hits() -> int:
                table = program["kpctl_hits"]
                return int(table[table.Key(0)].value)

            yield hits, "BPF trampoline"
        finally:
            program.cleanup()
    return setup


MECHANISMS: tuple[tuple[str, Setup | None], ...] = (
    ("no probe (baseline)", None),
    ("kprobe event, disabled", disabled_event),
    ("ftrace function tracer", function_tracer),
    ("fprobe event (f:)", fprobe_event),
    ("kprobe at +0 (tracefs)", entry_kprobe),
    ("kprobe at an offset, int3/BRK", lambda bench: offset_kprobe(bench, optimized=False)),
    ("kprobe at an offset, optimized", lambda bench: offset_kprobe(bench, optimized=True)),
    ("kretprobe (tracefs)", return_kprobe),
    ("kprobe (module)", module_probe(False)),
    ("kretprobe (module)", module_probe(True)),
    ("BPF kprobe", bpf_kprobe(False)),
    ("BPF kretprobe", bpf_kprobe(True)),
    ("BPF fentry", bpf_trampoline("fentry")),
    ("BPF fexit", bpf_trampoline("fexit")),
)


def run_bench(bench: Bench, say: Callable[[str], None] | None = None) -> list[Row]:
    """Every mechanism's row; what is set up for one is gone before the next."""
    baseline = bench.timed()
    base = statistics.median(baseline)
    rows = [Row(MECHANISMS[0][0], 0.0, max(baseline) - min(baseline), 0.0, 1.0, None, None, f"{base:.1f} ns per call")]
    for name, setup in MECHANISMS[1:]:
        assert setup is not None
        if say:
            say(name)
        try:
            # The row's own state goes with its setup, the rest with the session.
            with owned_session(bench.tracefs, "bench"), setup(bench) as (hits, detail):
                before = hits()
                times = bench.timed()
                counted = hits() - before
        except NotMeasured as e:
            rows.append(Row(name, None, None, None, None, None, None, str(e)))
            continue
        median = statistics.median(times)
        expected = 0 if setup is disabled_event else bench.made
        rows.append(Row(name, median - base, max(times) - min(times), min(times) - min(baseline), median / base,
                        counted, expected, detail))
    return rows


def context(driver: Driver, root: Path = Path("/")) -> Context:
    """What a reader needs to trust the numbers."""
    def read(path: str) -> str:
        try:
            return (root / path).read_text().strip()
        except OSError:
            return ""

    cpuinfo = read("proc/cpuinfo")
    fields = dict((k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in cpuinfo.splitlines()) if v)
    # arm64's cpuinfo names no model: its MIDR fields say which core it is.
    arm = (f"CPU implementer {fields['CPU implementer']}, part {fields['CPU part']}"
           if "CPU implementer" in fields and "CPU part" in fields else "")
    cpu = fields.get("model name") or fields.get("Hardware") or arm or platform.processor() or "unknown"
    vendor = " ".join(filter(None, (read("sys/class/dmi/id/sys_vendor"), read("sys/class/dmi/id/product_name"))))
    model = read("proc/device-tree/model").rstrip("\0")
    hypervisor = " hypervisor" in cpuinfo or "QEMU" in vendor or "dummy-virt" in model or "QEMU" in cpu
    emulated = "QEMU" in cpu or ("QEMU" in vendor and " hypervisor" not in cpuinfo) or "dummy-virt" in model
    if emulated:
        virtualization = (f"emulated ({vendor or model or cpu}): absolute times are not those of hardware; "
                          f"compare the ratios")
    elif hypervisor:
        virtualization = f"virtual machine ({vendor or 'hypervisor'})"
    else:
        virtualization = "none detected"
    vulnerabilities = root / "sys/devices/system/cpu/vulnerabilities"
    mitigated = []
    for entry in sorted(vulnerabilities.glob("*")) if vulnerabilities.is_dir() else []:
        state = read(str(entry.relative_to(root)))
        if not state.startswith("Not affected"):
            mitigated.append(f"{entry.name}: {state}")
    return Context(platform.release(), platform.machine(), cpu, virtualization,
                   "; ".join(mitigated) or "none reported", driver.description)


def open_driver(tracefs: Tracefs, kind: str | None = None) -> tuple[Driver, Callable[[], None]]:
    """The driver of that kind ("module" or "syscall"), or else the module's (loading
    the module if it is built and not loaded) where it can be had and the syscall loop
    where not; and what undoes the choice."""
    from kpctl.kmod import is_loaded

    loaded_here = False
    why = "asked for with --driver syscall" if kind == "syscall" else ""
    if not why and not is_loaded():
        try:
            from kpctl.kmod import loader

            loader.load()
            loaded_here = True
        except KpctlError as e:
            if kind == "module":
                raise
            why = f"the module could not be loaded: {e.message}"
    if not why:
        from kpctl.kmod.client import KmodClient

        client = KmodClient()

        def close() -> None:
            client.close()
            if loaded_here:
                from kpctl.kmod import loader

                loader.unload()
        return ModuleDriver(client), close
    symbol = next((f"{prefix}getpgid" for prefix in ("__x64_sys_", "__arm64_sys_", "sys_")
                   if tracefs.symbols.functions_named(f"{prefix}getpgid", None)), "sys_getpgid")
    return SyscallDriver(symbol, why), lambda: None


def rows_as_table(rows: Sequence[Row]) -> list[dict[str, str]]:
    shown = []
    for row in rows:
        measured = row.ns_per_hit is not None
        check = "" if row.checked is None else ("ok" if row.checked else f"{row.hits} of {row.expected}")
        shown.append({
            "mechanism": row.mechanism,
            "ns/hit": f"{round(row.ns_per_hit or 0):d}" if measured else "-",
            "spread": f"{round(row.spread):d}" if row.spread is not None else "-",
            "x baseline": f"{row.ratio:.2f}" if row.ratio is not None else "-",
            "hits": check,
            "what": row.detail if measured else f"not measured: {row.detail}",
        })
    return shown
