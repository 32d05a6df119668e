"""One inspection: a target resolved, judged, and its live code read."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kpctl import KPCTL_GROUP
from kpctl.backends.base import ProbeInfo
from kpctl.inspect.code import Code, code_lines, code_window, offset_refusal, site_refusal
from kpctl.inspect.disasm import Arch, Instruction, ftrace_site, kprobe_offset
from kpctl.inspect.kcore import Kcore, KcoreError
from kpctl.inspect.report import Report
from kpctl.inspect.target import kprobes_on_ftrace, parse_inspect_target, probes_on, resolve
from kpctl.owners import Owners
from kpctl.symbols import KernelSymbols
from kpctl.tracefs import Tracefs


@dataclass
class Inspector:
    """One inspection: the kernel's files, opened once. elsewhere: kpctl's probes that
    kprobe_events does not list (other backends'), to name them as kpctl's."""
    tracefs: Tracefs
    arch: Arch
    group: str = KPCTL_GROUP
    kcore_path: Path = Path("/proc/kcore")
    elsewhere: Sequence[ProbeInfo] = field(default_factory=list)

    @property
    def symbols(self) -> KernelSymbols:
        return self.tracefs.symbols

    def inspect(self, text: str, instructions: int = 16) -> Report:
        report = resolve(parse_inspect_target(text), self.arch, self.symbols)
        report.probes = probes_on(
            report, self.tracefs.kprobe_states(), self.tracefs.defined_probes(), self.group, self.elsewhere,
            Owners())
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
        report.code = code_lines(shown, report.arch, *self.site(report, decoded), symbolize=self.symbols.namer())
        if report.probes:
            report.notes.append("probes are on this function now: the code shown includes their patches")
        return report

    def site(self, report: Report, decoded: Sequence[Instruction]) -> tuple[int | None, bool]:
        """The ftrace site's offset in decoded (None: no site), and whether kprobes may
        use it."""
        traceable = self.symbols.traceable
        has_site = traceable is None or report.function in traceable
        return (ftrace_site(decoded, report.arch) if has_site else None), kprobes_on_ftrace(self.symbols)

    def _judge(self, report: Report, decoded: Sequence[Instruction]) -> None:
        """Add the code's own reasons against a probe at report.offset."""
        reason = offset_refusal(report.offset, decoded, report.arch)
        if reason is None:
            base = next((i for i in decoded if i.offset == report.offset), None)
            if base is not None:
                reason = site_refusal(base, report.arch, *self.site(report, decoded))
        if reason:
            report.reasons.append(reason)
            report.probeable = False
