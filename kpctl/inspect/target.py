"""The function a target names, whether a probe may go there by the symbol tables, and
the kprobes already on it with their owners."""
from __future__ import annotations

from collections.abc import Sequence

from kpctl.backends.base import ProbeInfo
from kpctl.errors import KpctlError, UsageError
from kpctl.inspect.disasm import Arch
from kpctl.inspect.kcore import hidden_addresses_error
from kpctl.inspect.report import KprobeOnFunction, Report
from kpctl.model import Probe, Target, parse_target
from kpctl.owners import Owners
from kpctl.sessions import session_of
from kpctl.symbols import KernelSymbols
from kpctl.tracefs import KprobeState


def parse_inspect_target(text: str) -> Target:
    """``sym``, ``sym+off`` or ``mod:sym`` (a ``%return`` suffix is allowed and ignored)."""
    target, _ = parse_target(text)
    if target.symbol is None:
        raise UsageError(f"inspect needs a symbol, not an address: {text}", "example: kpctl inspect vfs_read+5")
    return target


def resolve(target: Target, arch: Arch, symbols: KernelSymbols) -> Report:
    """The function of target from kallsyms, and what the symbol tables say about it."""
    name = target.symbol
    assert name is not None
    functions = symbols.functions_named(name, target.module)
    status = symbols.status(name)
    if not functions:
        where = f" in module {target.module}" if target.module else ""
        raise KpctlError(f"no function {name}{where} in /proc/kallsyms", status.reason or None)
    first = functions[0]
    if first.address == 0:
        raise hidden_addresses_error()
    size = symbols.size_of(first)
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


def kprobes_on_ftrace(symbols: KernelSymbols) -> bool:
    """CONFIG_KPROBES_ON_FTRACE: its handler is in kallsyms (x86 yes; arm64 no as of 6.12)."""
    return symbols.address_of("kprobe_ftrace_handler") is not None


def probes_on(report: Report, states: Sequence[KprobeState], defined: Sequence[Probe],
              owner_group: str, elsewhere: Sequence[ProbeInfo] = (), owners: Owners | None = None,
              ) -> list[KprobeOnFunction]:
    """The kprobes on report's function, each with its owner: for kpctl's, the command
    and pid that made a short-lived one (by its name, or by its owner record).

    defined is every probe of kprobe_events (any group); elsewhere kpctl's probes of
    other backends. A kprobe in neither was made through perf_event_open(), by BPF or by
    another module: tracefs never sees those (bcc and bpftrace attach so).
    """
    start, end = report.function_address, report.function_address + max(report.size, 1)
    unclaimed = list(defined)
    others = [i for i in elsewhere if i.address is not None]
    found = []
    for state in states:
        symbol = state.where.partition("+")[0]
        if not (start <= state.address < end or (state.address == 0 and symbol == report.function)):
            continue
        owner = "not in tracefs: perf_event_open (perf, BPF) or another module"
        match = next((p for p in unclaimed if state.holds(p)), None)
        if match is not None:
            unclaimed.remove(match)
            group, event = match.group or "", match.event or ""
            whose = _kpctl(group, event, owners) or ("kpctl" if group == owner_group else "another tool")
            owner = f"{whose}: tracefs {group}/{event}"
        elif (other := next((i for i in others if (i.address, i.probe.is_return) == (state.address, state.is_return)), None)):
            others.remove(other)
            owner = f"{_kpctl(owner_group, other.name, owners) or 'kpctl'}: backend {other.backend}, probe {other.name}"
        found.append(KprobeOnFunction(state.where, state.address, state.is_return, state.flags, owner))
    return found


def _kpctl(group: str, event: str, owners: Owners | None) -> str | None:
    """'kpctl COMMAND (pid PID)' when a kpctl process made group/event for itself."""
    session = session_of(event, group) or session_of(group)
    if session is not None:
        return f"kpctl {session}"
    owner = owners.owner(group, event) if owners is not None else None
    return f"kpctl {owner}" if owner is not None else None
