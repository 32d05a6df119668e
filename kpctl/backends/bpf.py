"""The BPF backend: kprobes and kretprobes as BPF programs through bcc (Debian's
python3-bpfcc; the PyPI package named bcc is another thing), attached through the
perf_kprobe PMU. They live as long as this process holds their descriptors, and vanish
with it, SIGKILL included: `kpctl trace --backend bpf`, never `add`.

Each hit goes through a perf buffer as a small record, which the hit source prints as a
trace_pipe line (`comm-tid [cpu] ts: probe: (sym+off) name=value ...`): watch's parser,
filters and --json then work as for every other backend.
"""
from __future__ import annotations

import select
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from kpctl.backends.base import ProbeInfo, ProbeStats
from kpctl.bcc_glue import INSTALL_HINT as INSTALL_HINT  # re-exported: kpctl.registry imports it from here
from kpctl.bcc_glue import compile_program
from kpctl.bcc_glue import import_bcc as import_bcc  # re-exported, as INSTALL_HINT
from kpctl.errors import KpctlError, ProbeExistsError, UsageError, check_probe_names
from kpctl.model import INTEGER_BITS, Comm, FetchArg, FunctionArgument, Probe, ReturnValue, default_event_name, printed_value

if TYPE_CHECKING:
    from kpctl.hits import ProbeNamer
    from kpctl.tracefs import Tracefs
    from kpctl.watch import HitSink, HitSource

# The hint for what the bpf backend cannot fetch, given only where the tracefs backend works (kpctl.registry).
TRACEFS_FETCHES = "use the tracefs backend for memory, registers and the rest"
MAX_ARGS = 6

_PROGRAM_HEAD = """
#include <uapi/linux/ptrace.h>
struct kpctl_hit {
    u64 ts;
    u64 args[%(args)d];
    u32 tid;
    u32 cpu;
    u32 probe;
    char comm[16];
};
BPF_PERF_OUTPUT(kpctl_hits);
BPF_ARRAY(kpctl_counts, u64, %(probes)d);
"""
_PROGRAM_PROBE = """
int kpctl_probe_%(n)d(struct pt_regs *ctx) {
    struct kpctl_hit hit = {};
    u32 key = %(n)d;
    u64 *count = kpctl_counts.lookup(&key);
    if (count)
        __sync_fetch_and_add(count, 1);
    hit.ts = bpf_ktime_get_ns();
    hit.tid = (u32)bpf_get_current_pid_tgid();
    hit.cpu = bpf_get_smp_processor_id();
    hit.probe = %(n)d;
    bpf_get_current_comm(&hit.comm, sizeof(hit.comm));
%(fetch)s
    kpctl_hits.perf_submit(ctx, &hit, sizeof(hit));
    return 0;
}
"""


def fetch_expression(arg: FetchArg, is_return: bool, elsewhere: str | None = None) -> str | None:
    """The C expression (over ctx, a struct pt_regs *) that reads arg; None for $comm,
    which a record carries anyway. UsageError for what the bpf backend cannot fetch,
    with elsewhere as its hint."""
    fetch = arg.fetch
    if isinstance(fetch, Comm):
        return None
    if isinstance(fetch, FunctionArgument) and 1 <= fetch.index <= MAX_ARGS and not fetch.access:
        expression = f"PT_REGS_PARM{fetch.index}(ctx)"
    elif isinstance(fetch, ReturnValue) and is_return and not fetch.access:
        expression = "PT_REGS_RC(ctx)"
    else:
        raise UsageError(f"the bpf backend fetches $arg1..$arg{MAX_ARGS}, $retval and $comm, not {fetch}", elsewhere)
    if arg.type is not None and arg.type.base not in INTEGER_BITS:
        raise UsageError(f"the bpf backend prints integer types (u32, s64, x64, ...), not {arg.type}")
    return expression


def _fetch(probe: Probe, elsewhere: str | None = None) -> list[str]:
    """C statements filling hit.args from the probe's fetch arguments."""
    expressions = [(i, fetch_expression(arg, probe.is_return, elsewhere)) for i, arg in enumerate(probe.args)]
    return [f"    hit.args[{i}] = {e};" for i, e in expressions if e is not None]


@dataclass
class _Attached:
    probe: Probe
    program: Any  # the bcc.BPF object that holds it
    function: str  # its BPF function's name
    index: int  # its slot in that program's counts
    enabled: bool = True


@dataclass
class BpfBackend:
    """kpctl's BPF probes of this process."""
    tracefs: Tracefs
    group: str
    name: str = "bpf"
    hits_in_tracefs: bool = False
    fetch_hint: str | None = None  # for fetches it cannot make (kpctl.registry: the tracefs backend, where it works)
    _probes: dict[str, _Attached] = field(default_factory=dict)
    _sources: dict[int, PerfBufferSource] = field(default_factory=dict)  # by id() of the program

    def requests(self, probes: Sequence[Probe], *, enable: bool = True, event_filter: str | None = None) -> list[str]:
        self._check(probes, event_filter)
        return [f"bpf {'kretprobe' if p.is_return else 'kprobe'} {p.target} -> {p.event}" for p in probes]

    def _check(self, probes: Sequence[Probe], event_filter: str | None) -> None:
        if event_filter is not None:
            raise UsageError("the bpf backend has no kernel filters", "filter in watch: --pid, --comm")
        for probe in probes:
            if probe.target.symbol is None or probe.target.module:
                raise UsageError(f"the bpf backend probes kernel symbols only, not {probe.target}")
            if probe.is_return and probe.target.offset:
                raise UsageError("a return probe goes at the function's entry (+0)")
            if len(probe.args) > MAX_ARGS:
                raise UsageError(f"the bpf backend records at most {MAX_ARGS} fetch arguments")
            _fetch(probe, self.fetch_hint)

    def add(self, probes: Sequence[Probe], *, enable: bool = True, event_filter: str | None = None) -> list[ProbeInfo]:
        self._check(probes, event_filter)
        probes = [p if p.event else replace(p, event=default_event_name(p.target, p.is_return)) for p in probes]
        for probe in probes:
            if probe.event in self._probes:
                raise ProbeExistsError(f"a probe named {probe.event} already exists in backend bpf")
        text = _PROGRAM_HEAD % {"args": MAX_ARGS, "probes": len(probes)} + "".join(
            _PROGRAM_PROBE % {"n": n, "fetch": "\n".join(_fetch(p))} for n, p in enumerate(probes))
        program = compile_program(text)
        attached = [_Attached(probe, program, f"kpctl_probe_{n}", n, enabled=False) for n, probe in enumerate(probes)]
        try:
            # The buffer opens before the first probe arms: no hit is lost in between.
            source = PerfBufferSource(program, attached)
            if enable:
                for entry in attached:
                    self._attach(entry)
        except BaseException:
            for entry in attached:
                self._detach(entry)
            program.cleanup()
            raise
        self._sources[id(program)] = source
        for entry in attached:
            self._probes[entry.probe.event or ""] = entry
        return [self._info(e) for e in attached]

    def _attach(self, entry: _Attached) -> None:
        target = entry.probe.target
        attach = entry.program.attach_kretprobe if entry.probe.is_return else entry.program.attach_kprobe
        kwargs = {} if entry.probe.is_return else {"event_off": target.offset}
        try:
            attach(event=target.symbol, fn_name=entry.function, **kwargs)
        except Exception as e:  # bcc: "Failed to attach BPF program ... to kprobe ..."
            raise KpctlError(f"the kernel refused a BPF probe on {target}: {e}") from None
        entry.enabled = True

    def _detach(self, entry: _Attached) -> None:
        if not entry.enabled:
            return
        target = entry.probe.target
        if entry.probe.is_return:
            entry.program.detach_kretprobe(event=target.symbol, fn_name=entry.function)
        else:
            entry.program.detach_kprobe(event=target.symbol, fn_name=entry.function)
        entry.enabled = False

    def _info(self, entry: _Attached) -> ProbeInfo:
        return ProbeInfo(replace(entry.probe, group=self.group), entry.enabled, None, self.name)

    def _by_name(self, names: Sequence[str]) -> list[_Attached]:
        check_probe_names(names, self._probes, "backend bpf")
        return [self._probes[n] for n in names]

    def remove(self, names: Sequence[str]) -> None:
        gone = self._by_name(names)
        for entry in gone:
            self._detach(entry)
            del self._probes[entry.probe.event or ""]
        alive = {id(e.program) for e in self._probes.values()}
        for program in {id(e.program): e.program for e in gone}.values():
            if id(program) not in alive:
                self._sources.pop(id(program)).close()
                program.cleanup()  # its last probe went: the program and its buffers go too

    def remove_all(self) -> list[str]:
        names = list(self._probes)
        programs = {id(e.program): e.program for e in self._probes.values()}
        for entry in self._probes.values():
            self._detach(entry)
        self._probes.clear()
        for program in programs.values():
            self._sources.pop(id(program)).close()
            program.cleanup()
        return names

    def enable(self, names: Sequence[str]) -> None:
        for entry in self._by_name(names):
            if not entry.enabled:
                self._attach(entry)

    def disable(self, names: Sequence[str]) -> None:
        for entry in self._by_name(names):
            self._detach(entry)

    def list_probes(self) -> list[ProbeInfo]:
        return [self._info(e) for e in self._probes.values()]

    def stats(self) -> list[ProbeStats]:
        found = []
        for name, entry in self._probes.items():
            counts = entry.program["kpctl_counts"]
            found.append(ProbeStats(name, int(counts[counts.Key(entry.index)].value), 0, self.name))
        return found

    def record_into(self, instance: str) -> None:
        pass  # hits come through perf buffers, not tracefs

    def probe_namers(self) -> Mapping[str, ProbeNamer]:
        return {}  # each record names its probe

    def hit_sources(self) -> list[HitSource]:
        return list(self._sources.values())


class PerfBufferSource:
    """A program's perf buffer as a hit source: one epoll descriptor over its per-CPU
    readers for poll(), records printed as trace_pipe lines."""

    def __init__(self, program: Any, probes: Sequence[_Attached]) -> None:
        from bcc.libbcc import lib

        self._program = program
        self._by_index = {e.index: e for e in probes}
        self._lines: list[str] = []
        self._read = lib.perf_reader_event_read
        table = program["kpctl_hits"]
        table.open_perf_buffer(self._record, page_cnt=64)
        self._readers = [reader for key, reader in program.perf_buffers.items() if key[0] == id(table)]
        self._epoll = select.epoll()
        for reader in self._readers:
            self._epoll.register(lib.perf_reader_fd(reader), select.EPOLLIN)

    def fileno(self) -> int:
        return self._epoll.fileno()

    def close(self) -> None:
        self._epoll.close()

    def _record(self, cpu: int, data: Any, size: int) -> None:
        hit = self._program["kpctl_hits"].event(data)
        entry = self._by_index.get(hit.probe)
        if entry is None:
            return
        self._lines.append(trace_line(entry.probe, hit.comm.decode(errors="replace"), hit.tid, hit.cpu, hit.ts,
                                      list(hit.args)))

    def read_into(self, sink: HitSink) -> bool:
        # Every CPU's ring read to its end (perf_reader_event_read() calls _record per
        # record), whether poll() said so or not.
        for reader in self._readers:
            self._read(reader)
        if self._lines:
            text, self._lines = "".join(self._lines), []
            sink.feed(text)
            sink.flush()
        return True


def trace_line(probe: Probe, comm: str, tid: int, cpu: int, ts_ns: int, raw: Sequence[int]) -> str:
    """A record as trace_pipe would print the hit of a kprobe event."""
    target = probe.target
    where = f" <- {target.symbol}" if probe.is_return else f"{target.symbol}+{target.offset:#x}"
    args = []
    for i, arg in enumerate(probe.args, 1):
        name = arg.name or f"arg{i}"
        value = f'"{comm}"' if isinstance(arg.fetch, Comm) else printed_value(raw[i - 1], arg.type)
        args.append(f" {name}={value}")
    return f"{comm}-{tid} [{cpu:03d}] ..... {ts_ns // 1000 / 1e6:.6f}: {probe.event}: ({where}){''.join(args)}\n"

