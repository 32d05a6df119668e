"""`kpctl inspect`: what a kprobe does to the kernel's code, shown on the live kernel.

inspect() resolves a target through kallsyms, says whether a probe may go there and why
not, disassembles the function's first instructions from /proc/kcore with the places a
probe may go marked, and lists every kprobe already on the function with its owner.
arm() then puts short-lived probes there and snapshots the code at each stage: before,
armed, optimized (x86), and restored; and follows one real return through the return
probe trampoline. render_text() and to_json() turn a Report into output with no I/O.

Kernel features are detected from what the kernel shows, never from its version:
- kprobes on ftrace (CONFIG_KPROBES_ON_FTRACE): kallsyms has kprobe_ftrace_handler;
- jump optimization (CONFIG_OPTPROBES): /proc/sys/debug/kprobes-optimization reads 1;
- the return trampoline: whichever of arch_rethook_trampoline (rethook, v5.19 on x86,
  commit f3a112c0c40d), __kretprobe_trampoline (v5.16) or kretprobe_trampoline kallsyms has.
"""
from __future__ import annotations

import bisect
import os
import select
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import cached_property
from operator import attrgetter
from pathlib import Path

from kpctl.disasm import (
    X86_JMP32,
    Arch,
    Instruction,
    boundaries_of,
    changed_bytes,
    disassemble,
    ftrace_site,
    kprobe_offset,
    probe_refusal,
    recognise,
)
from kpctl.errors import KpctlError
from kpctl.hits import Hit, HitParser
from kpctl.kcore import Kcore, KcoreError, hidden_addresses_error
from kpctl.model import Probe, Target, parse_fetch_arg, parse_target
from kpctl.symbols import KernelSymbol
from kpctl.tracefs import KprobeState, Tracefs, TracefsBackend, open_file

INSPECT_GROUP = "kpctl_inspect"  # inspect --arm's own group (and instance prefix): user probes stay untouched
KMOD_MODULE = Path("/sys/module/kpctl_kmod")
OPTIMIZATION_SYSCTL = Path("/proc/sys/debug/kprobes-optimization")
TRAMPOLINES = ("arch_rethook_trampoline", "__kretprobe_trampoline", "kretprobe_trampoline")
_TEXT_TYPES = frozenset("tTwW")
_MAX_X86_INSN = 15
_PAGE = 4096


# --- the report ------------------------------------------------------------------------

@dataclass(frozen=True)
class CodeLine:
    """One instruction of a snapshot, with what kpctl knows about it."""
    offset: int
    address: int
    raw: bytes
    text: str
    refusal: str | None  # why no probe may go here; None: one may
    note: str  # what kprobes/ftrace made of it
    changed: tuple[int, ...] = ()  # indexes into raw of bytes that differ from "before"


@dataclass(frozen=True)
class KprobeOnFunction:
    """A kprobe the kernel has on the function (debug/kprobes/list), and whose it is."""
    where: str
    address: int
    is_return: bool
    flags: tuple[str, ...]
    owner: str


@dataclass(frozen=True)
class Step:
    """The code at one stage of --arm."""
    name: str  # before, armed, ftrace, optimized, not-optimized, restored, ...
    summary: str
    code: tuple[CodeLine, ...]
    flags: tuple[str, ...] = ()
    elapsed: float | None = None  # seconds since the probe was enabled


@dataclass(frozen=True)
class ReturnTrip:
    """Where a return probe sends the function's return, and one real return through it."""
    trampoline: str | None
    trampoline_address: int | None
    entry: Step | None  # the function's entry while the return probe is armed
    caller: str | None = None
    function: str | None = None
    retval: str | None = None
    pid: int | None = None
    comm: str | None = None


@dataclass
class Report:
    arch: Arch
    target: str
    function: str
    module: str | None
    function_address: int
    size: int
    offset: int
    probeable: bool
    reasons: list[str]  # why not, when not probeable
    notes: list[str] = field(default_factory=list)  # remarks that do not forbid a probe
    code: tuple[CodeLine, ...] = ()
    code_error: str | None = None
    probes: list[KprobeOnFunction] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    ret: ReturnTrip | None = None

    @property
    def address(self) -> int:
        return self.function_address + self.offset


# --- kallsyms --------------------------------------------------------------------------

class SymbolTable:
    """kallsyms by address, for sizes (up to the next symbol) and for naming addresses."""

    def __init__(self, by_name: dict[str, list[KernelSymbol]], kallsyms: Path = Path("/proc/kallsyms")) -> None:
        self.by_name = by_name
        self.kallsyms = kallsyms

    @cached_property
    def _sorted(self) -> tuple[list[int], list[KernelSymbol]]:
        symbols = sorted((s for group in self.by_name.values() for s in group), key=attrgetter("address"))
        return [s.address for s in symbols], symbols

    def size_of(self, symbol: KernelSymbol) -> int:
        """Bytes up to the next symbol at a higher address (how kallsyms_lookup_size_offset()
        sizes a function; on 6.x x86 that excludes the __pfx_ padding of the next one)."""
        addresses, _ = self._sorted
        i = bisect.bisect_right(addresses, symbol.address)
        return addresses[i] - symbol.address if i < len(addresses) else 0

    def dynamic(self) -> list[KernelSymbol]:
        """Pages of code the kernel made at run time, which kallsyms lists as modules
        "__builtin__kprobes" (kprobe_insn_page, kprobe_optinsn_page: v5.1, commit
        d002b8bc33b9) and "__builtin__ftrace" (ftrace_trampoline): read afresh, because
        arming a probe is what creates them."""
        found = []
        with open(self.kallsyms, errors="replace") as f:
            for line in f:
                if "[__builtin__" in line:
                    address, kind, name, module = line.split()[:4]
                    found.append(KernelSymbol(name, int(address, 16), kind, module.strip("[]")))
        return found

    def name(self, address: int, dynamic: Sequence[KernelSymbol] = ()) -> str | None:
        """sym+0xoff [module] for a code address, as %pS prints it; None for an address
        in no function (a nearest symbol that is data, or ends before it, names nothing)."""
        for page in dynamic:
            if page.address <= address < page.address + _PAGE:
                return f"{page.name}+{address - page.address:#x} [{page.module}]"
        addresses, symbols = self._sorted
        i = bisect.bisect_right(addresses, address) - 1
        if i < 0 or address == 0:
            return None
        s = symbols[i]
        if s.type not in _TEXT_TYPES or address - s.address >= self.size_of(s) > 0:
            return None
        text = f"{s.name}+{address - s.address:#x}" if address != s.address else s.name
        return f"{text} [{s.module}]" if s.module else text

    def namer(self) -> Callable[[int], str | None]:
        """name(), with the run-time code pages as they are now."""
        dynamic = self.dynamic()
        return lambda address: self.name(address, dynamic)

    def address_of(self, name: str) -> int | None:
        return next((s.address for s in self.by_name.get(name, ())), None)


# --- resolving and judging -------------------------------------------------------------

def parse_inspect_target(text: str) -> Target:
    """``sym``, ``sym+off`` or ``mod:sym`` (a ``%return`` suffix is allowed and ignored)."""
    target, _ = parse_target(text)
    if target.symbol is None:
        raise KpctlError(f"inspect needs a symbol, not an address: {text}", "example: kpctl inspect vfs_read+5")
    return target


def resolve(target: Target, tracefs: Tracefs, arch: Arch, table: SymbolTable) -> Report:
    """The function of target from kallsyms, and what the symbol tables say about it."""
    symbols = tracefs.symbols
    name = target.symbol
    assert name is not None
    functions = [
        s for s in symbols.by_name.get(name, ())
        if s.type in _TEXT_TYPES and (target.module is None or s.module == target.module)
    ]
    status = symbols.status(name)
    if not functions:
        where = f" in module {target.module}" if target.module else ""
        raise KpctlError(f"no function {name}{where} in /proc/kallsyms", status.reason or None)
    first = functions[0]
    if first.address == 0:
        raise hidden_addresses_error()
    size = table.size_of(first)
    reasons: list[str] = []
    notes: list[str] = []
    if len(functions) > 1:
        reasons.append(
            f"not unique: {len(functions)} functions are named {name} "
            f"({', '.join(hex(f.address) for f in functions)}); kernels since v6.7 refuse such a "
            "name (commit b022f0c7e404), older ones probe the first: give MOD:SYM"
        )
    if not status.probeable:
        reasons.append(status.reason)
    else:  # remarks such as notrace or a compiler clone; uniqueness is judged above, per module
        notes.extend(n for n in status.reason.split("; ") if n and not n.startswith("not unique"))
    if target.offset >= size > 0:
        reasons.append(f"+{target.offset} is past the end of {name} ({size} bytes)")
    return Report(
        arch=arch, target=str(target), function=name, module=first.module, function_address=first.address,
        size=size, offset=target.offset, probeable=not reasons, reasons=reasons, notes=notes,
    )


def kprobes_on_ftrace(symbols: SymbolTable) -> bool:
    """CONFIG_KPROBES_ON_FTRACE: its handler is in kallsyms (x86 yes; arm64 no as of 6.12)."""
    return symbols.address_of("kprobe_ftrace_handler") is not None


def code_lines(
    instructions: Sequence[Instruction], arch: Arch, site: int | None, on_ftrace: bool,
    original: Sequence[Instruction] = (), before: bytes | None = None, after: bytes | None = None,
    symbolize: Callable[[int], str | None] = lambda _: None,
) -> tuple[CodeLine, ...]:
    """CodeLines of instructions. original (the code before any probe) decides where a
    probe may go and what an instruction replaced; before/after mark the changed bytes."""
    by_offset = {i.offset: i for i in original or instructions}
    changed = changed_bytes(before, after) if before is not None and after is not None else frozenset()
    lines = []
    for insn in instructions:
        base = by_offset.get(insn.offset)
        refusal = site_refusal(base, arch, site, on_ftrace) if base else "not an instruction boundary of the original code"
        note = recognise(insn, arch, site, base if original else None, symbolize)
        if insn.mnemonic == ".byte" and original:
            note = "the rest of the instruction the patch replaced: never executed while it is there"
        lines.append(CodeLine(
            offset=insn.offset, address=insn.address, raw=insn.raw, text=insn.text, refusal=refusal, note=note,
            changed=tuple(i - insn.offset for i in range(insn.offset, insn.end) if i in changed),
        ))
    return tuple(lines)


def site_refusal(insn: Instruction, arch: Arch, site: int | None, on_ftrace: bool) -> str | None:
    """Why no kprobe may sit at insn (an instruction of the original code), or None."""
    if insn.offset == site and not on_ftrace:
        # check_ftrace_location(): an ftrace site without CONFIG_KPROBES_ON_FTRACE is -EINVAL.
        return "the ftrace patch site: this kernel cannot put a kprobe on it (no kprobes on ftrace)"
    return probe_refusal(insn, arch)


def offset_refusal(offset: int, instructions: Sequence[Instruction], arch: Arch) -> str | None:
    """Why offset is not a place for a kprobe in this code, judged by boundaries alone."""
    if arch == "arm64" and offset % 4:
        return f"+{offset} is not 4-byte aligned: arm64 instructions are 4 bytes (arch_prepare_kprobe())"
    boundaries = boundaries_of(instructions)
    if arch == "x86_64" and offset not in boundaries and offset < max((i.end for i in instructions), default=0):
        inside = next(i for i in instructions if i.offset < offset < i.end)
        return (
            f"+{offset} is not an instruction boundary: it is inside `{inside.text}` at +{inside.offset} "
            f"(x86 can_probe() decodes from the function's start)"
        )
    return None


# --- live code -------------------------------------------------------------------------

@dataclass
class Code:
    """Reads and decodes one function's live text, the same window each time."""
    kcore: Kcore
    report: Report
    length: int

    def read(self) -> bytes:
        return self.kcore.read(self.report.function_address, self.length)

    def decode(self, data: bytes, original: Sequence[Instruction] = ()) -> list[Instruction]:
        instructions = disassemble(
            data, self.report.function_address, self.report.arch, boundaries_of(original) if original else None
        )
        # The window may end inside an instruction: drop what could not be decoded there.
        while instructions and instructions[-1].mnemonic == ".byte" and instructions[-1].end == len(data) and len(data) < self.report.size:
            instructions.pop()
        return instructions


def code_window(report: Report, instructions: int) -> int:
    """How many bytes hold the first `instructions` instructions, and the probed one."""
    per = 4 if report.arch == "arm64" else _MAX_X86_INSN
    return min(max(report.size, 1), max(per * instructions, report.offset + per))


# --- probes already there --------------------------------------------------------------

def probes_on(report: Report, states: Sequence[KprobeState], defined: Sequence[Probe],
              owner_group: str, kmod: Sequence[tuple[int, bool]] = ()) -> list[KprobeOnFunction]:
    """The kprobes on report's function, each with its owner.

    defined is every probe of kprobe_events (any group); kmod the (address, is_return)
    of kpctl_kmod's probes. A kprobe in neither was made through perf_event_open(), by
    BPF or by another module: tracefs never sees those (bcc and bpftrace attach so).
    """
    start, end = report.function_address, report.function_address + max(report.size, 1)
    unclaimed = list(defined)
    kmod_left = list(kmod)
    found = []
    for state in states:
        symbol, _, offset_text = state.where.partition("+")
        if not (start <= state.address < end or (state.address == 0 and symbol == report.function)):
            continue
        offset = int(offset_text, 16) if offset_text else 0
        owner = "not in tracefs: perf_event_open (perf, BPF) or another module"
        match = next((p for p in unclaimed if _same_place(p, symbol, offset, state)), None)
        if match is not None:
            unclaimed.remove(match)
            whose = "kpctl" if match.group in (owner_group, INSPECT_GROUP) else "another tool"
            owner = f"{whose}: tracefs {match.group}/{match.event}"
        elif (state.address, state.is_return) in kmod_left:
            kmod_left.remove((state.address, state.is_return))
            owner = "kpctl: kernel module kpctl_kmod"
        found.append(KprobeOnFunction(state.where, state.address, state.is_return, state.flags, owner))
    return found


def _same_place(probe: Probe, symbol: str, offset: int, state: KprobeState) -> bool:
    if probe.is_return != state.is_return:
        return False
    if probe.target.address is not None:
        return probe.target.address == state.address
    return probe.target.symbol == symbol and probe.target.offset == offset


def kmod_probes() -> list[tuple[int, bool]]:
    """(address, is_return) of kpctl_kmod's probes; empty when it is not loaded."""
    if not KMOD_MODULE.exists():
        return []
    try:
        from kpctl.kmod.client import KmodClient
        from kpctl.kmod.messages import Kind

        with KmodClient() as client:
            return [(p.address, p.kind == Kind.RETURN) for p in client.dump()]
    except (KpctlError, ImportError, OSError):
        return []  # loaded but unreachable: its probes show as "not in tracefs"


# --- inspect ---------------------------------------------------------------------------

@dataclass
class Inspector:
    """One inspection: the kernel's files, opened once."""
    tracefs: Tracefs
    arch: Arch
    group: str = "kpctl"
    kcore_path: Path = Path("/proc/kcore")

    @cached_property
    def symbols(self) -> SymbolTable:
        return SymbolTable(self.tracefs.symbols.by_name, self.tracefs.proc / "kallsyms")

    def inspect(self, text: str, instructions: int = 16) -> Report:
        report = resolve(parse_inspect_target(text), self.tracefs, self.arch, self.symbols)
        report.probes = probes_on(
            report, self.tracefs.kprobe_states(), self.tracefs.defined_probes(), self.group, kmod_probes())
        try:
            kcore = Kcore(self.kcore_path)
        except KcoreError as e:
            report.code_error = f"{e.message}; {e.hint}"
            return report
        with kcore:
            code = Code(kcore, report, code_window(report, instructions))
            decoded = code.decode(code.read())
        adjusted = kprobe_offset(decoded, report.arch, report.offset)
        if adjusted != report.offset:
            report.notes.append(f"{report.function} starts with ENDBR64 (IBT): the kernel puts a probe at +0 at +{adjusted}")
            report.offset = adjusted
        self._judge(report, decoded)
        shown = [insn for n, insn in enumerate(decoded) if n < instructions or insn.offset <= report.offset]
        report.code = code_lines(shown, report.arch, *self._site(report, decoded), symbolize=self.symbols.namer())
        if report.probes:
            report.notes.append("probes are on this function now: the code shown includes their patches")
        return report

    def _site(self, report: Report, decoded: Sequence[Instruction]) -> tuple[int | None, bool]:
        traceable = self.tracefs.symbols.traceable
        has_site = traceable is None or report.function in traceable
        return (ftrace_site(decoded, report.arch) if has_site else None), kprobes_on_ftrace(self.symbols)

    def _judge(self, report: Report, decoded: Sequence[Instruction]) -> None:
        """Add the code's own reasons against a probe at report.offset."""
        reason = offset_refusal(report.offset, decoded, report.arch)
        if reason is None:
            base = next((i for i in decoded if i.offset == report.offset), None)
            if base is not None:
                reason = site_refusal(base, report.arch, *self._site(report, decoded))
        if reason:
            report.reasons.append(reason)
            report.probeable = False

    # --- --arm -------------------------------------------------------------------------

    def arm(self, report: Report, wait: float = 5.0, instructions: int = 16) -> Report:
        """Put short-lived probes at report's target and record the code at each stage.

        The probes live in kpctl's inspect group and instance and are removed on every
        way out: return, exception, Ctrl-C, and SIGTERM (turned into StopRequested).
        """
        from kpctl.watch import signals_ignored, stop_on_sigterm

        if not report.probeable:
            raise KpctlError(f"no probe may go at {report.target}: {report.reasons[0]}")
        # Events and instance of this process's own: two inspects at once neither remove
        # nor read each other's.
        tag = f"p{os.getpid()}"
        backend = TracefsBackend(self.tracefs, group=INSPECT_GROUP, instance=f"{INSPECT_GROUP}_{tag}")
        with stop_on_sigterm():
            try:
                self._record_stages(report, backend, tag, wait, instructions)
            finally:
                # add() undoes a probe it is interrupted in, but not the instance it (or
                # hit_pipe()) made: that is this process's alone, so it goes in any case.
                with signals_ignored():
                    self.tracefs.remove_instance(backend.instance)
        return report

    def _record_stages(self, report: Report, backend: TracefsBackend, tag: str, wait: float, instructions: int) -> None:
        with Kcore(self.kcore_path) as kcore:
            code = Code(kcore, report, code_window(report, instructions))
            before = code.read()
            original = code.decode(before)
            site, on_ftrace = self._site(report, original)
            window = [i.offset for i in original if i.offset <= report.offset + 8 or i.offset < 16]

            def snapshot(name: str, summary: str, data: bytes, flags: tuple[str, ...] = (), elapsed: float | None = None) -> Step:
                shown = [i for i in code.decode(data, original) if i.offset <= max(window)]
                lines = code_lines(shown, report.arch, site, on_ftrace, original, before, data, self.symbols.namer())
                return Step(name, summary, lines, flags, elapsed)

            report.steps.append(snapshot("before", "the function as compiled (and as ftrace left it)", before))
            entry = Probe("p", Target(symbol=report.function, offset=report.offset, module=report.module), event=tag)
            with short_lived(backend, entry) as started:
                report.steps.extend(self._watch_entry(code, snapshot, entry, started, wait, site == report.offset))
            report.steps.append(self._restored(code, before, snapshot, wait))
            report.ret = self._return_trip(backend, code, snapshot, tag + "_ret", wait)

    def _state(self, probe: Probe) -> KprobeState | None:
        where = f"{probe.target.symbol}+{probe.target.offset:#x}"
        return next((s for s in self.tracefs.kprobe_states() if s.where == where and s.is_return == probe.is_return), None)

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
        trampoline = next((n for n in TRAMPOLINES if self.symbols.address_of(n) is not None), None)
        probe = Probe("r", Target(symbol=report.function, module=report.module), event=tag,
                      args=(parse_fetch_arg("ret=$retval"),))
        pipe = backend.hit_pipe()
        with short_lived(backend, probe):
            state = self._state(probe)
            entry = snapshot("return-probe", "return probe armed: its entry handler swaps the return address "
                             f"for {trampoline or 'the trampoline'}", code.read(), state.flags if state else ())
            hit = first_return(pipe, HitParser([probe]), tag, wait)
        trip = ReturnTrip(trampoline, self.symbols.address_of(trampoline) if trampoline else None, entry)
        if hit is None:
            return trip
        caller, _, function = hit.where.partition(" <- ")
        return replace(trip, caller=caller, function=function, retval=str(hit.args.get("ret")), pid=hit.pid, comm=hit.comm)


def _is_jump(code: bytes, offset: int) -> bool:
    return code[offset:offset + 1] == bytes([X86_JMP32])


def optimization_enabled(path: Path = OPTIMIZATION_SYSCTL) -> bool:
    """CONFIG_OPTPROBES is built in and debug.kprobes-optimization is on."""
    try:
        return path.read_text().strip() == "1"
    except OSError:
        return False


@contextmanager
def short_lived(backend: TracefsBackend, probe: Probe) -> Iterator[float]:
    """The probe, enabled, for the block; removed however the block ends. Yields the
    time it was enabled. backend.add() undoes itself when interrupted."""
    from kpctl.watch import signals_ignored

    assert probe.event is not None
    backend.add([probe])
    try:
        yield time.monotonic()
    finally:
        with signals_ignored():  # a second Ctrl-C must not leave the probe behind
            backend.remove([probe.event])


def first_return(pipe: Path, parser: HitParser, event: str, wait: float) -> Hit | None:
    """The first return hit of event in trace_pipe within wait seconds, this process's
    own when there is one. Each round makes a read(2) of our own, so that functions on the
    read path (vfs_read, ksys_read, ...) return at least once."""
    with open_file(pipe, os.O_RDONLY | os.O_NONBLOCK) as file:
        fd = file.fileno()
        deadline = time.monotonic() + wait
        text = ""
        while time.monotonic() < deadline:
            with open("/proc/self/stat", "rb") as f:
                f.read()
            select.select([fd], [], [], 0.2)
            try:
                text += os.read(fd, 1 << 16).decode(errors="replace")
            except BlockingIOError:
                continue
            hits = [h for h in parser.hits(text[: text.rfind("\n") + 1]) if h.event == event and h.is_return]
            if hits:
                return min(hits, key=lambda h: h.pid != os.getpid())
        return None


# --- output (pure) ---------------------------------------------------------------------

def _hex_bytes(line: CodeLine, mark: Callable[[str], str]) -> str:
    return " ".join(mark(f"{b:02x}") if i in line.changed else f"{b:02x}" for i, b in enumerate(line.raw))


def _brackets(text: str) -> str:
    return f"[{text}]"


def render_code(lines: Sequence[CodeLine], target_offset: int, mark: Callable[[str], str] = _brackets) -> list[str]:
    """Instruction lines: a probe mark, offset, address, bytes (changed ones marked),
    the instruction, and kpctl's note. ``*`` is where the probe goes, ``+`` where one may,
    `` `` where none may."""
    out = []
    width = max((len(_hex_bytes(line, _brackets)) for line in lines), default=0)
    for line in lines:
        here = "*" if line.offset == target_offset else ("+" if line.refusal is None else " ")
        raw = _hex_bytes(line, mark)
        pad = " " * (width - len(_hex_bytes(line, _brackets)))
        note = f"  ; {line.note}" if line.note else ""
        refusal = f"  ; no probe: {line.refusal}" if line.refusal and (line.offset == target_offset or not line.note) and line.text != ".byte" else ""
        out.append(f"  {here} +{line.offset:<4} {line.address:016x}  {raw}{pad}  {line.text:<34}{note}{refusal}".rstrip())
    return out


def render_text(report: Report, mark: Callable[[str], str] = _brackets) -> str:
    """The report as text. mark highlights a changed byte (brackets; the CLI may color)."""
    module = report.module or "vmlinux"
    out = [(
        f"{report.target}: {report.address:#x} ({report.function} at {report.function_address:#x}, "
        f"{report.size} bytes, {module}, {report.arch})"
    )]
    if report.probeable:
        out.append("probe here: yes")
    else:
        out.append("probe here: no")
        out += [f"  - {reason}" for reason in report.reasons]
    out += [f"  note: {note}" for note in report.notes]
    if report.code:
        out.append("code (live, /proc/kcore; * the target, + a probe may go there, [xx] bytes changed):")
        out += render_code(report.code, report.offset, mark)
    elif report.code_error:
        out.append(f"code: unavailable: {report.code_error}")
    if report.probes:
        out.append(f"kprobes on {report.function} now (debug/kprobes/list):")
        for p in report.probes:
            kind = "return" if p.is_return else "entry "
            flags = "".join(f"[{f}]" for f in p.flags) or "-"
            out.append(f"  {p.where:<24} {kind} {flags:<20} {p.owner}")
    else:
        out.append(f"kprobes on {report.function} now: none")
    for n, step in enumerate(report.steps, 1):
        out.append("")
        when = f" (+{step.elapsed:.1f} s)" if step.elapsed is not None else ""
        flags = " " + "".join(f"[{f}]" for f in step.flags) if step.flags else ""
        out.append(f"{n}. {step.name}{when}{flags}: {step.summary}")
        out += render_code(step.code, report.offset, mark)
    if report.ret is not None:
        out += [""] + _render_return(report.ret, report, mark)
    return "\n".join(out) + "\n"


def _render_return(ret: ReturnTrip, report: Report, mark: Callable[[str], str]) -> list[str]:
    where = f"{ret.trampoline} at {ret.trampoline_address:#x}" if ret.trampoline and ret.trampoline_address else "no trampoline symbol in kallsyms"
    out = [f"return probe on {report.function}: returns go through {where}"]
    if ret.entry is not None:
        flags = " " + "".join(f"[{f}]" for f in ret.entry.flags) if ret.entry.flags else ""
        out.append(f"  entry while armed{flags}: {ret.entry.summary}")
        out += render_code(ret.entry.code, 0, mark)
    if ret.caller is not None:
        out.append(f"  one real return: {ret.function} returned {ret.retval} to {ret.caller} "
                   f"(pid {ret.pid} {ret.comm}), by way of {ret.trampoline or 'the trampoline'}")
    else:
        out.append("  no return seen in time: nothing called the function")
    return out


def _line_json(line: CodeLine) -> dict[str, object]:
    return {
        "offset": line.offset, "address": f"{line.address:#x}", "bytes": line.raw.hex(" "), "instruction": line.text,
        "probe_allowed": line.refusal is None, "refusal": line.refusal, "note": line.note or None,
        "changed": list(line.changed),
    }


def _step_json(step: Step) -> dict[str, object]:
    return {"step": step.name, "summary": step.summary, "flags": list(step.flags), "elapsed": step.elapsed,
            "code": [_line_json(line) for line in step.code]}


def to_json(report: Report) -> dict[str, object]:
    """The report as JSON-ready data; addresses as hex strings, bytes as spaced hex."""
    ret = report.ret
    return {
        "target": report.target, "arch": report.arch, "function": report.function, "module": report.module,
        "function_address": f"{report.function_address:#x}", "address": f"{report.address:#x}",
        "size": report.size, "offset": report.offset, "probeable": report.probeable, "reasons": report.reasons,
        "notes": report.notes, "code": [_line_json(line) for line in report.code], "code_error": report.code_error,
        "probes": [
            {"where": p.where, "address": f"{p.address:#x}", "kind": "return" if p.is_return else "entry",
             "flags": list(p.flags), "owner": p.owner}
            for p in report.probes
        ],
        "steps": [_step_json(s) for s in report.steps],
        "return": None if ret is None else {
            "trampoline": ret.trampoline,
            "trampoline_address": f"{ret.trampoline_address:#x}" if ret.trampoline_address else None,
            "entry": _step_json(ret.entry) if ret.entry else None,
            "caller": ret.caller, "function": ret.function, "retval": ret.retval, "pid": ret.pid, "comm": ret.comm,
        },
    }
