"""inspect --arm: short-lived probes at the target, and the live code at each stage."""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

from kpctl.backends.tracefs import TracefsBackend
from kpctl.errors import KpctlError
from kpctl.gc import owned_session
from kpctl.hits import Hit, HitParser
from kpctl.inspect.code import Code, code_lines, code_window
from kpctl.inspect.disasm import X86_JMP32
from kpctl.inspect.inspector import Inspector
from kpctl.inspect.kcore import Kcore
from kpctl.inspect.report import Report, ReturnTrip, Step
from kpctl.manager import short_lived
from kpctl.model import Probe, Target, parse_fetch_arg
from kpctl.tracefs import KprobeState
from kpctl.watch import TracePipeSource, pump

OPTIMIZATION_SYSCTL = Path("/proc/sys/debug/kprobes-optimization")
TRAMPOLINES = ("arch_rethook_trampoline", "__kretprobe_trampoline", "kretprobe_trampoline")


class Arming:
    """--arm on one inspection's report."""

    def __init__(self, inspector: Inspector) -> None:
        self.inspector = inspector


    def arm(self, report: Report, wait: float = 5.0, instructions: int = 16) -> Report:
        """Put short-lived probes at report's target and record the code at each stage.

        The probes live in the process's inspect session (its events in kpctl's inspect
        group, its instance) and are removed on every way out: return, exception, Ctrl-C,
        and SIGTERM (turned into StopRequested).
        """
        if not report.probeable:
            raise KpctlError(f"no probe may go at {report.target}: {report.reasons[0]}")
        # Events and instance of this process's own: two inspects at once neither remove
        # nor read each other's.
        with owned_session(self.inspector.tracefs, "inspect") as session:
            backend = TracefsBackend(self.inspector.tracefs, group=session.group, instance=session.instance)
            self._record_stages(report, backend, session.inspect_event, wait, instructions)
        return report

    def _record_stages(self, report: Report, backend: TracefsBackend, tag: str, wait: float, instructions: int) -> None:
        with Kcore(self.inspector.kcore_path) as kcore:
            code = Code(kcore, report, code_window(report, instructions))
            before = code.read()
            original = code.decode(before)
            site, on_ftrace = self.inspector.site(report, original)
            window = [i.offset for i in original if i.offset <= report.offset + 8 or i.offset < 16]

            def snapshot(name: str, summary: str, data: bytes, flags: tuple[str, ...] = (), elapsed: float | None = None) -> Step:
                shown = [i for i in code.decode(data, original) if i.offset <= max(window)]
                lines = code_lines(shown, report.arch, site, on_ftrace, original, before, data, self.inspector.symbols.namer())
                return Step(name, summary, lines, flags, elapsed)

            report.steps.append(snapshot("before", "the function as compiled (and as ftrace left it)", before))
            entry = Probe("p", Target(symbol=report.function, offset=report.offset, module=report.module), event=tag)
            with short_lived(backend, [entry]) as started:
                report.steps.extend(self._watch_entry(code, snapshot, entry, started, wait, site == report.offset))
            report.steps.append(self._restored(code, before, snapshot, wait))
            report.ret = self._return_trip(backend, code, snapshot, tag + "_ret", wait)

    def _state(self, probe: Probe) -> KprobeState | None:
        where = f"{probe.target.symbol}+{probe.target.offset:#x}"
        return next((s for s in self.inspector.tracefs.kprobe_states() if s.where == where and s.is_return == probe.is_return), None)

    def _watch_entry(
        self, code: Code, snapshot: Callable[..., Step], probe: Probe, started: float, wait: float, at_site: bool,
    ) -> Iterator[Step]:
        state = self._state(probe)
        flags = state.flags if state else ()
        data = code.read()
        if "FTRACE" in flags or at_site:
            yield snapshot("ftrace", "armed through ftrace: the function's ftrace call now enters kprobes "
                           "(kprobe_ftrace_handler), no breakpoint", data, flags, time.monotonic() - started)
            return
        trap = "int3" if code.report.arch == "x86_64" else "brk #0x4"
        offset = code.report.offset
        if not _is_jump(data, offset):
            yield snapshot("armed", f"armed: {trap} over the probed instruction; a hit traps, the saved "
                           "copy runs out of line, execution continues after it", data, flags, time.monotonic() - started)
        if not optimization_enabled():
            return
        # [OPTIMIZED] appears when the probe is queued for the optimizer (optimize_kprobe()),
        # which patches the code OPTIMIZE_DELAY jiffies later: the bytes are the proof.
        while not _is_jump(data, offset) and time.monotonic() < started + wait:
            time.sleep(0.1)
            data = code.read()
        state = self._state(probe)
        flags = state.flags if state else ()
        if _is_jump(data, offset):
            yield snapshot("optimized", "optimized: the kprobe optimizer replaced the trap with a jump to a "
                           "detour buffer that calls the handler without a trap (arch/x86/kernel/kprobes/opt.c)",
                           data, flags, time.monotonic() - started)
        else:
            yield snapshot("not-optimized", f"not optimized within {wait:g} s: the instructions the 5-byte jump "
                           "would cover cannot be relocated here, or the optimizer has not run", data, flags, wait)

    def _restored(self, code: Code, before: bytes, snapshot: Callable[..., Step], wait: float) -> Step:
        # An optimized probe is unoptimized by the same delayed optimizer: poll for it.
        started = time.monotonic()
        data = code.read()
        while data != before and time.monotonic() - started < wait:
            time.sleep(0.1)
            data = code.read()
        if data == before:
            return snapshot("restored", "probe removed: the original bytes are back", data, (), time.monotonic() - started)
        return snapshot("not-restored", f"probe removed, but the code still differs after {wait:g} s "
                        "(another probe or ftrace user is here)", data, (), time.monotonic() - started)

    def _return_trip(self, backend: TracefsBackend, code: Code, snapshot: Callable[..., Step], tag: str, wait: float) -> ReturnTrip:
        """A return probe on the function: its entry patch, its trampoline, and one real
        return through it, read back from the trace (caller and return value)."""
        report = code.report
        trampoline = next((n for n in TRAMPOLINES if self.inspector.symbols.address_of(n) is not None), None)
        probe = Probe("r", Target(symbol=report.function, module=report.module), event=tag,
                      args=(parse_fetch_arg("ret=$retval"),))
        self.inspector.tracefs.make_instance(backend.instance)
        with short_lived(backend, [probe]):
            state = self._state(probe)
            entry = snapshot("return-probe", "return probe armed: its entry handler swaps the return address "
                             f"for {trampoline or 'the trampoline'}", code.read(), state.flags if state else ())
            first = FirstReturn(HitParser([probe]), tag)
            with TracePipeSource(self.inspector.tracefs.path(f"{backend.instance}/trace_pipe")) as pipe:
                # A read(2) of our own each round: functions on the read path (vfs_read,
                # ksys_read, ...) return at least once.
                pump([pipe], first, wait, each_round=_read_own_stat)
            hit = first.hit
        trip = ReturnTrip(trampoline, self.inspector.symbols.address_of(trampoline) if trampoline else None, entry)
        if hit is None:
            return trip
        caller, _, function = hit.where.partition(" <- ")
        return replace(trip, caller=caller, function=function, retval=str(hit.args.get("ret")), pid=hit.tid, comm=hit.comm)


def _is_jump(code: bytes, offset: int) -> bool:
    return code[offset:offset + 1] == bytes([X86_JMP32])


def optimization_enabled(path: Path = OPTIMIZATION_SYSCTL) -> bool:
    """CONFIG_OPTPROBES is built in and debug.kprobes-optimization is on."""
    try:
        return path.read_text().strip() == "1"
    except OSError:
        return False


def _read_own_stat() -> bool:
    with open("/proc/self/stat", "rb") as f:
        f.read()
    return True


class FirstReturn:
    """A hit sink that keeps the first return hit of one event, this process's own
    when the text that has it has one."""

    def __init__(self, parser: HitParser, event: str) -> None:
        self.parser = parser
        self.event = event
        self.hit: Hit | None = None

    @property
    def done(self) -> bool:
        return self.hit is not None

    def feed(self, text: str) -> None:
        hits = [h for h in self.parser.hits(text) if h.event == self.event and h.is_return]
        if hits and self.hit is None:
            self.hit = min(hits, key=lambda h: h.tid != os.getpid())

    def flush(self) -> None:
        pass
