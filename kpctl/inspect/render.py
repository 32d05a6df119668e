"""A Report as text or as JSON-ready data: pure, no I/O."""
from __future__ import annotations

from collections.abc import Callable, Sequence

from kpctl.inspect.report import CodeLine, Report, ReturnTrip, Step


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
