"""What inspect finds: a Report, with the code at each stage (plain data, no I/O)."""
from __future__ import annotations

from dataclasses import dataclass, field

from kpctl.inspect.disasm import Arch


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
