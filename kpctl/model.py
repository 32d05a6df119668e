"""The probe model: kprobe_events lines as values, parsed and formatted with no I/O.

The grammar is the one of Documentation/trace/kprobetrace.rst and of the tracefs README's
"kprobe_events" synopsis::

    p[:[GROUP/][EVENT]] [MOD:]SYM[+OFFS]|MEMADDR [FETCHARGS]
    r[MAXACTIVE][:[GROUP/][EVENT]] [MOD:]SYM[+0]|MEMADDR [FETCHARGS]
    p[:[GROUP/][EVENT]] [MOD:]SYM[+0]%return [FETCHARGS]      (v5.11, commit 0bf8dc1b6b7b)
    -:[GROUP/]EVENT

Each FETCHARG is ``[NAME=]FETCH[:TYPE]``. The kernel prints lines back in a canonical form
(trace_kprobe_show()): a return probe always carries its maxactive (``r10:`` is the default
on both arches), ``%return`` becomes ``r``, every argument gets a name (``arg1=$retval``)
and offsets are decimal. format_probe() writes that canonical form, so
``parse_probe(format_probe(p)) == p`` for every probe, and a line the kernel printed
formats back to itself.

Parsing is permissive where the kernel grows (type names, BTF argument expressions):
kpctl checks the structure and leaves what a given kernel accepts to the kernel, whose
own error message then reaches the user (see tracefs.py).
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Union

from kpctl.errors import ProbeSyntaxError, UsageError, check_given_once, clipped
from kpctl.limits import (
    MAX_ARG_NAME_LEN,
    MAX_ARRAY_LEN,
    MAX_DEREF_DEPTH,
    MAX_EVENT_NAME_LEN,
    MAX_MAXACTIVE,
    MAX_MODULE_NAME_LEN,
    MAX_STACK_PARAM,
    MAX_SYMBOL_LEN,
    MAX_TRACE_ARGS,
)

KERNEL_DEFAULT_GROUP = "kprobes"  # the kernel's group for probes written without one

# Field names every event has (traceprobe_conflict_field_name()): an argument cannot take them.
_RESERVED_ARG_NAMES = frozenset({
    "common_type", "common_flags", "common_preempt_count", "common_pid", "common_tgid",
    "__probe_ip", "__probe_ret_ip", "__probe_func",
})
# The fetch types of the tracefs README's synopsis, bitfields and arrays aside.
BASE_TYPES = ("u8", "u16", "u32", "u64", "s8", "s16", "s32", "s64", "x8", "x16", "x32", "x64",
              "char", "string", "ustring", "symbol", "symstr", "%pd", "%pD")

# Event and group names "must follow the same rules as C identifiers" (is_good_name()).
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# kallsyms names include compiler suffixes such as do_foo.isra.0 and .cold.
_SYMBOL = r"[A-Za-z_.][A-Za-z0-9_.$]*"
_TARGET = re.compile(
    rf"(?:(?P<module>[A-Za-z0-9_-]+):)?(?P<symbol>{_SYMBOL})"
    r"(?:\+(?P<offset>0[xX][0-9a-fA-F]+|[0-9]+))?(?P<ret>%return)?\Z"
)
# As much of a target as can start a valid one: where it stops is where an error points.
_TARGET_PREFIX = re.compile(
    rf"(?:[A-Za-z0-9_-]+:)?(?:{_SYMBOL}(?:\+(?:0[xX][0-9a-fA-F]*|[0-9]+)?)?(?:%return)?)?"
)
_ADDRESS = re.compile(r"(?:0[xX][0-9a-fA-F]+|[0-9]+)\Z")
_HEAD = re.compile(r"(?P<kind>[pr])(?P<maxactive>[0-9]+)?(?::(?:(?P<group>[^/\s]*)/)?(?P<event>[^/\s]*))?\Z")
_NUMBER = re.compile(r"[+-]?(?:0[xX][0-9a-fA-F]+|[0-9]+)")
# BTF field access after an argument: $arg1->f_path.dentry, skb->len (v6.7, commit 302db0f5b3d8).
_ACCESS = re.compile(r"(?:(?:->|\.)[A-Za-z_][A-Za-z0-9_]*)*")
_ARG_NAME = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=")
_BITFIELD = re.compile(r"b([0-9]+)@([0-9]+)/([0-9]+)\Z")
# What the kernel's isspace() takes for a space, byte by byte (lib/ctype.c: 0xa0 too).
_KERNEL_SPACE = frozenset(b"\t\n\v\f\r \xa0")
_TYPE = re.compile(r"(?P<base>[A-Za-z%][A-Za-z0-9_@/]*)(?:\[(?P<array>[0-9]+)\])?\Z")


def _number(text: str, line: str, at: int, base: int = 0) -> int:
    """A number of the spec as the kernel reads it (kstrtoul(): base 0 takes 0x for hex
    and a leading 0 for octal), refused beyond 64 bits before Python converts it (a
    number of 100,000 digits costs seconds, and one of more than 4,300 raises). Digits
    are ASCII, as the kernel's: the patterns say [0-9], never \\d, which takes any
    script's digits (int() reads the Arabic-Indic one as 1)."""
    digits = text.lstrip("+-")
    if len(digits) > 24:
        raise ProbeSyntaxError("a number is 64 bits at most", line, at)
    try:
        if base == 0 and len(digits) > 1 and digits[0] == "0" and digits[1].isdigit():
            value = int(digits, 8) * (-1 if text.startswith("-") else 1)
        else:
            value = int(text, base)
    except ValueError:
        raise ProbeSyntaxError("not a number (a leading 0 makes it octal, as for the kernel)", line, at) from None
    if abs(value) >= 1 << 64:
        raise ProbeSyntaxError("a number is 64 bits at most", line, at)
    return value


# --- fetch expressions -------------------------------------------------------------

@dataclass(frozen=True)
class Register:
    """``%REG``: a register by the architecture's name (``%di``, ``%x0``, ``%sp``)."""
    name: str

    def __str__(self) -> str:
        return f"%{self.name}"


@dataclass(frozen=True)
class MemoryAddress:
    """``@ADDR``: memory at a kernel address."""
    address: int

    def __str__(self) -> str:
        return f"@{self.address:#x}"


@dataclass(frozen=True)
class MemorySymbol:
    """``@SYM[+|-OFFS]``: memory at a data symbol (needs CONFIG_KALLSYMS_ALL)."""
    symbol: str
    offset: int = 0

    def __str__(self) -> str:
        return f"@{self.symbol}{self.offset:+d}" if self.offset else f"@{self.symbol}"


@dataclass(frozen=True)
class StackEntry:
    """``$stackN``: the Nth word on the stack."""
    index: int

    def __str__(self) -> str:
        return f"$stack{self.index}"


@dataclass(frozen=True)
class StackAddress:
    """``$stack``: the stack pointer itself."""

    def __str__(self) -> str:
        return "$stack"


@dataclass(frozen=True)
class FunctionArgument:
    """``$argN`` (N >= 1), optionally followed by a BTF field access (``->f_path``)."""
    index: int
    access: str = ""

    def __str__(self) -> str:
        return f"$arg{self.index}{self.access}"


@dataclass(frozen=True)
class AllArguments:
    """``$arg*``: every argument, named from BTF (v6.6, commit 18b1e870a496)."""

    def __str__(self) -> str:
        return "$arg*"


@dataclass(frozen=True)
class ReturnValue:
    """``$retval``: only in return probes; BTF kernels allow a field access after it."""
    access: str = ""

    def __str__(self) -> str:
        return f"$retval{self.access}"


@dataclass(frozen=True)
class Comm:
    """``$comm``: the current task's name, a string."""

    def __str__(self) -> str:
        return "$comm"


@dataclass(frozen=True)
class Immediate:
    """``\\IMM`` or ``\\"STRING"``: a constant stored as the value (v5.6, commit a42e3c4de964)."""
    text: str  # as written after the backslash: 1234, -5, 0x10 or "hello"

    def __str__(self) -> str:
        return f"\\{self.text}"


@dataclass(frozen=True)
class BtfArgument:
    """A parameter named as in the source (``count``, ``file->f_mode``): BTF kernels only."""
    name: str
    access: str = ""

    def __str__(self) -> str:
        return f"{self.name}{self.access}"


@dataclass(frozen=True)
class Dereference:
    """``+|-[u]OFFS(FETCH)``: memory at FETCH + OFFS; ``u`` reads user memory (v5.5)."""
    offset: int
    base: Fetch
    user: bool = False

    def __str__(self) -> str:
        sign = "-" if self.offset < 0 else "+"
        return f"{sign}{'u' if self.user else ''}{abs(self.offset)}({self.base})"


Fetch = Union[
    Register, MemoryAddress, MemorySymbol, StackEntry, StackAddress, FunctionArgument,
    AllArguments, ReturnValue, Comm, Immediate, BtfArgument, Dereference,
]


# --- types and arguments -----------------------------------------------------------

@dataclass(frozen=True)
class Bitfield:
    """``b<width>@<offset>/<container>``: bits of a container of 8, 16, 32 or 64 bits."""
    width: int
    offset: int
    container: int

    def __str__(self) -> str:
        return f"b{self.width}@{self.offset}/{self.container}"


@dataclass(frozen=True)
class ArgType:
    """A fetch type: a base name (u8..u64, s8..s64, x8..x64, char, string, ustring,
    symbol, symstr, %pd, %pD, ...) or a bitfield, optionally as an array ``TYPE[N]``."""
    base: str
    bitfield: Bitfield | None = None
    array: int | None = None

    def __str__(self) -> str:
        text = str(self.bitfield) if self.bitfield else self.base
        return f"{text}[{self.array}]" if self.array is not None else text

    @property
    def is_string(self) -> bool:
        return self.base in ("string", "ustring", "symstr", "%pd", "%pD")


INTEGER_BITS = {f"{sign}{bits}": bits for sign in "usx" for bits in (8, 16, 32, 64)}


def printed_value(raw: int, arg_type: ArgType | None) -> str:
    """An argument printed as the kernel prints that type in trace_pipe."""
    base = arg_type.base if arg_type is not None else "x64"
    bits = INTEGER_BITS[base]
    value = raw & ((1 << bits) - 1)
    if base.startswith("s") and value >= 1 << (bits - 1):
        value -= 1 << bits
    return f"{value:#x}" if base.startswith("x") else str(value)


@dataclass(frozen=True)
class FetchArg:
    """One ``[NAME=]FETCH[:TYPE]`` argument of a probe."""
    fetch: Fetch
    name: str | None = None
    type: ArgType | None = None

    def __str__(self) -> str:
        text = f"{self.name}={self.fetch}" if self.name else str(self.fetch)
        return f"{text}:{self.type}" if self.type else text


# --- probes ------------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    """Where a probe sits: ``[MOD:]SYM[+OFFS]`` or a bare address (``MEMADDR``)."""
    symbol: str | None = None
    offset: int = 0
    module: str | None = None
    address: int | None = None

    def __post_init__(self) -> None:
        if (self.symbol is None) == (self.address is None):
            raise ValueError("a target is either a symbol or an address")

    def __str__(self) -> str:
        if self.address is not None:
            return f"{self.address:#018x}"  # as the kernel prints it: "0x%p"
        text = f"{self.module}:{self.symbol}" if self.module else str(self.symbol)
        return f"{text}+{self.offset}" if self.offset else text


@dataclass(frozen=True)
class Probe:
    """A kprobe (``kind="p"``) or kretprobe (``kind="r"``) definition."""
    kind: Literal["p", "r"]
    target: Target
    event: str | None = None
    group: str | None = None
    args: tuple[FetchArg, ...] = field(default=())
    # Only for return probes; None lets the kernel choose (it reads back as r10 on 6.1).
    maxactive: int | None = None

    @property
    def is_return(self) -> bool:
        return self.kind == "r"

    @property
    def full_name(self) -> str:
        return f"{self.group or KERNEL_DEFAULT_GROUP}/{self.event}"

    def __str__(self) -> str:
        return format_probe(self)


def format_probe(probe: Probe) -> str:
    """The line that defines probe in kprobe_events."""
    head = probe.kind + (str(probe.maxactive) if probe.maxactive is not None else "")
    if probe.group is not None or probe.event is not None:
        head += ":" + (f"{probe.group}/" if probe.group is not None else "") + (probe.event or "")
    return " ".join([head, str(probe.target), *map(str, probe.args)])


def format_removal(group: str, event: str) -> str:
    """The line that removes an event from kprobe_events."""
    return f"-:{group}/{event}"


def _check_utf8(text: str, what: str) -> None:
    """UsageError for text holding bytes that are not UTF-8 (Python keeps those of a
    command line as lone surrogates): no line to the kernel carries them, nor can an
    error mark a column in them."""
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            raise UsageError(f"{what} is not UTF-8 text: {clipped(text)}") from None


def parse_probe(line: str) -> Probe:
    """Parse one kprobe_events line, as written by a user or printed back by the kernel.

    Raises ProbeSyntaxError pointing at the byte where the line goes wrong.
    """
    _check_utf8(line, "a probe definition")
    tokens = [(m.group(), m.start()) for m in re.finditer(r"\S+", line)]
    if not tokens:
        raise ProbeSyntaxError("empty probe definition", line, 0)
    head_text, _ = tokens[0]
    head = _HEAD.match(head_text)
    if head is None:
        raise ProbeSyntaxError("a probe starts with p, r or rMAXACTIVE, then :[GROUP/]EVENT", line, 0)
    kind: Literal["p", "r"] = "r" if head["kind"] == "r" else "p"
    if head["maxactive"] is not None and kind != "r":
        raise ProbeSyntaxError("MAXACTIVE is only for return probes (rN:)", line, 1)
    for part in ("group", "event"):
        name = head[part]
        problem = name_problem(name, part) if name else None
        if problem is not None:
            raise ProbeSyntaxError(problem, line, head.start(part))
    if len(tokens) < 2:
        raise ProbeSyntaxError("missing probe target (SYMBOL, MOD:SYMBOL, SYMBOL+OFFS or ADDRESS)", line, len(line))
    target_text, target_at = tokens[1]
    target, is_return = parse_target(target_text, line, target_at)
    if is_return:
        kind = "r"
    args = tuple(parse_fetch_arg(text, line, at) for text, at in tokens[2:])
    return Probe(
        kind=kind,
        target=target,
        event=head["event"] or None,
        group=head["group"] if head["group"] else None,
        args=args,
        maxactive=_number(head["maxactive"], line, 1, 10) if head["maxactive"] is not None else None,
    )


def parse_target(text: str, line: str | None = None, at: int = 0) -> tuple[Target, bool]:
    """Parse ``[MOD:]SYM[+OFFS][%return]`` or an address; True when ``%return`` was given."""
    _check_utf8(text, "a target")
    line = text if line is None else line
    if _ADDRESS.match(text):
        return Target(address=_number(text, line, at)), False
    match = _TARGET.match(text)
    if match is None:
        valid = _TARGET_PREFIX.match(text)
        raise ProbeSyntaxError("target must be SYMBOL, MOD:SYMBOL, SYMBOL+OFFS, SYMBOL%return or ADDRESS", line,
                               at + (valid.end() if valid else 0))
    offset = _number(match["offset"], line, at + match.start("offset")) if match["offset"] else 0
    if match["ret"] and offset:
        raise ProbeSyntaxError("%return works only at the function entry (+0)", line, at + match.start("offset"))
    return Target(symbol=match["symbol"], offset=offset, module=match["module"]), bool(match["ret"])


def parse_fetch_arg(text: str, line: str | None = None, at: int = 0) -> FetchArg:
    """Parse ``[NAME=]FETCH[:TYPE]``; at is text's byte offset in line, for errors."""
    _check_utf8(text, "a fetch argument")
    line = text if line is None else line
    name = None
    named = _ARG_NAME.match(text)
    pos = 0
    if named:
        name, pos = named.group(1), named.end()
        if len(name) > MAX_ARG_NAME_LEN:
            raise ProbeSyntaxError(f"an argument's name has at most {MAX_ARG_NAME_LEN} characters", line, at)
        if name in _RESERVED_ARG_NAMES:
            raise ProbeSyntaxError(f"{name} is a field every event has: name the argument otherwise", line, at)
    fetch, pos = _parse_fetch(text, pos, line, at)
    arg_type = None
    if pos < len(text):
        if text[pos] != ":":
            raise ProbeSyntaxError("unexpected text after the fetch argument", line, at + pos)
        arg_type = parse_type(text[pos + 1:], line, at + pos + 1)
    is_string = isinstance(fetch, Comm) or isinstance(fetch, Immediate) and fetch.text.startswith('"')
    if is_string and arg_type is not None and (arg_type.base != "string" or arg_type.array is not None):
        raise ProbeSyntaxError("$comm and a string immediate are strings: type string, or none", line, at + pos + 1)
    return FetchArg(fetch=fetch, name=name, type=arg_type)


def parse_type(text: str, line: str | None = None, at: int = 0) -> ArgType:
    line = text if line is None else line
    match = _TYPE.match(text)
    if match is None:
        raise ProbeSyntaxError("a type is a name such as u32, x64, string or b4@2/32, optionally TYPE[N]", line, at)
    base = match["base"]
    array = _number(match["array"], line, at + match.start("array"), 10) if match["array"] is not None else None
    if array is not None and not 1 <= array <= MAX_ARRAY_LEN:
        raise ProbeSyntaxError(f"an array has 1 to {MAX_ARRAY_LEN} elements", line, at + match.start("array"))
    bits = _BITFIELD.match(base)
    if bits:
        width, offset, container = (_number(n, line, at, 10) for n in bits.groups())
        if container not in (8, 16, 32, 64) or width < 1 or width + offset > container:
            raise ProbeSyntaxError("a bitfield's container is 8, 16, 32 or 64 bits, and holds its width at its offset",
                                   line, at)
        return ArgType(base="bitfield", bitfield=Bitfield(width, offset, container), array=array)
    if "@" in base or "/" in base:
        raise ProbeSyntaxError("a bitfield is b<bit-width>@<bit-offset>/<container-size>", line, at)
    if base not in BASE_TYPES:
        raise ProbeSyntaxError(f"unknown type {clipped(base)} (types: {', '.join(BASE_TYPES)}, "
                               "b<width>@<offset>/<container>, TYPE[N])", line, at)
    return ArgType(base=base, array=array)


def _parse_fetch(text: str, pos: int, line: str, at: int, depth: int = 0) -> tuple[Fetch, int]:
    """Parse one fetch expression of text from pos, inside depth dereferences; return it
    and the position after it."""
    rest = text[pos:]
    error_at = at + pos
    if rest.startswith("%"):
        match = re.match(r"%([A-Za-z0-9_]+)", rest)
        if match is None:
            raise ProbeSyntaxError("a register is %NAME, such as %di or %x0", line, error_at)
        return Register(match.group(1)), pos + match.end()
    if rest.startswith("@"):
        match = re.match(rf"@(?:(0[xX][0-9a-fA-F]+|[0-9]+)|({_SYMBOL})([+-](?:0[xX][0-9a-fA-F]+|[0-9]+))?)", rest)
        if match is None:
            raise ProbeSyntaxError("memory is @ADDRESS or @SYMBOL[+|-OFFSET]", line, error_at)
        if match.group(1):
            return MemoryAddress(_number(match.group(1), line, error_at)), pos + match.end()
        offset = _number(match.group(3), line, error_at) if match.group(3) else 0
        return MemorySymbol(match.group(2), offset), pos + match.end()
    if rest.startswith("$"):
        return _parse_variable(rest, pos, line, error_at)
    if rest.startswith("\\"):
        match = re.match(r'\\("[^"]*"|[+-]?(?:0[xX][0-9a-fA-F]+|[0-9]+))', rest)
        if match is None:
            raise ProbeSyntaxError('an immediate is \\NUMBER or \\"STRING"', line, error_at)
        value = match.group(1)
        if not value.startswith('"'):
            _number(value, line, error_at + 1)
        elif not all(c.isprintable() and not _KERNEL_SPACE.intersection(c.encode()) for c in value):
            # The kernel splits a command at its spaces (argv_split()): the string would be cut.
            raise ProbeSyntaxError("a string immediate holds no spaces nor control characters", line, error_at)
        return Immediate(value), pos + match.end()
    if rest[:1] in ("+", "-"):
        match = re.match(r"([+-])(u?)(0[xX][0-9a-fA-F]+|[0-9]+)\(", rest)
        if match is None:
            raise ProbeSyntaxError("a dereference is +|-[u]OFFSET(FETCHARG)", line, error_at)
        offset = _number(match.group(3), line, error_at) * (-1 if match.group(1) == "-" else 1)
        if depth == MAX_DEREF_DEPTH:
            raise ProbeSyntaxError(f"dereferences nest {MAX_DEREF_DEPTH} deep at most (the kernel's fetch program)",
                                   line, error_at)
        base, end = _parse_fetch(text, pos + match.end(), line, at, depth + 1)
        if text[end:end + 1] != ")":
            raise ProbeSyntaxError("dereference brace is not closed", line, at + end)
        return Dereference(offset, base, user=bool(match.group(2))), end + 1
    match = re.match(r"[A-Za-z_][A-Za-z0-9_]*", rest)
    if match is None:
        raise ProbeSyntaxError("unknown fetch argument", line, error_at)
    access = _ACCESS.match(rest, match.end())
    assert access is not None  # the pattern also matches the empty string
    return BtfArgument(match.group(), access.group()), pos + access.end()


def _parse_variable(rest: str, pos: int, line: str, error_at: int) -> tuple[Fetch, int]:
    match = re.match(r"\$(stack|arg|retval|comm|COMM)([0-9]+|\*)?", rest)
    if match is None:
        raise ProbeSyntaxError("unknown $-variable ($argN, $arg*, $retval, $stack, $stackN, $comm)", line, error_at)
    var, index = match.group(1), match.group(2)
    end = match.end()
    if var == "stack":
        if index == "*":
            raise ProbeSyntaxError("$stack takes a number: $stackN", line, error_at)
        if index and _number(index, line, error_at, 10) > MAX_STACK_PARAM:
            raise ProbeSyntaxError(f"$stackN reaches {MAX_STACK_PARAM} words at most (the kernel's stack)", line, error_at)
        return (StackEntry(int(index)) if index else StackAddress()), pos + end
    if var == "arg":
        if index == "*":
            return AllArguments(), pos + end
        number = _number(index, line, error_at, 10) if index is not None else 0
        if number < 1:
            raise ProbeSyntaxError("$argN counts from 1", line, error_at)
        if number > MAX_STACK_PARAM:
            raise ProbeSyntaxError(f"$argN reaches {MAX_STACK_PARAM} at most (the kernel's stack)", line, error_at)
        access = _ACCESS.match(rest, end)
        assert access is not None
        return FunctionArgument(number, access.group()), pos + access.end()
    if index is not None:
        raise ProbeSyntaxError(f"${var} takes no number", line, error_at + len(var) + 1)
    if var == "retval":
        access = _ACCESS.match(rest, end)
        assert access is not None
        return ReturnValue(access.group()), pos + access.end()
    return Comm(), pos + end


# --- names -------------------------------------------------------------------------

def name_problem(name: str, what: str = "event") -> str | None:
    """Why the kernel would refuse name as an event's or a group's (what) name, or None."""
    limit = MAX_EVENT_NAME_LEN - 1 if what == "group" else MAX_EVENT_NAME_LEN
    if not name:
        return f"{what} name is empty"
    if len(name) > limit:
        return f"{what} name is too long: at most {limit} characters"
    if not _IDENTIFIER.match(name):
        return f"{what} name must follow the same rules as C identifiers"
    return None


def check_name(name: str, what: str = "event") -> None:
    """UsageError when the kernel would refuse name as an event's or a group's name."""
    problem = name_problem(name, what)
    if problem is not None:
        raise UsageError(f"invalid {what} name {clipped(name)!r}", f"{problem}: [A-Za-z_][A-Za-z0-9_]*, "
                         f"at most {MAX_EVENT_NAME_LEN - (what == 'group')} characters")


def default_event_name(target: Target, is_return: bool) -> str:
    """kpctl's name for a probe the user did not name: the symbol, readable and unique
    per target (``vfs_read``, ``vfs_read_8``, ``vfs_read_ret``, ``ext4_file_open``); a
    name too long for the kernel keeps its start and a hash of the whole."""
    if target.address is not None:
        base = f"addr_{target.address:x}"
    else:
        base = re.sub(r"[^A-Za-z0-9_]", "_", str(target.symbol))
        if target.offset:
            base += f"_{target.offset}"
    if base[0].isdigit():
        base = "_" + base
    name = base + ("_ret" if is_return else "")
    if len(name) > MAX_EVENT_NAME_LEN:
        import zlib

        name = f"{name[:MAX_EVENT_NAME_LEN - 9]}_{zlib.crc32(name.encode()):08x}"
    return name


def _uses_return_value(fetch: Fetch) -> bool:
    if isinstance(fetch, Dereference):
        return _uses_return_value(fetch.base)
    return isinstance(fetch, ReturnValue)


def check_fetch_args(args: Sequence[FetchArg], is_return: bool, texts: Sequence[str]) -> None:
    """What the kernel refuses of a probe's arguments as a whole, refused first (texts:
    the arguments as given, for the caret): too many, a name given twice (the kernel
    names an unnamed one argN, or after its BTF parameter), $retval on entry."""
    line = " ".join(texts)
    starts = [sum(len(t) + 1 for t in texts[:i]) for i in range(len(texts))]
    if len(args) > MAX_TRACE_ARGS:
        raise ProbeSyntaxError(f"a probe has at most {MAX_TRACE_ARGS} arguments", line, starts[MAX_TRACE_ARGS])
    names: set[str] = set()
    for i, arg in enumerate(args):
        if not is_return and _uses_return_value(arg.fetch):
            raise ProbeSyntaxError("$retval is for return probes (--ret, or TARGET%return)", line, starts[i])
        if arg.name is not None:
            name = arg.name
        elif isinstance(arg.fetch, BtfArgument) and not arg.fetch.access:
            name = arg.fetch.name
        else:
            name = f"arg{i + 1}"
        if name in names:
            raise ProbeSyntaxError(f"two arguments are named {name}: give each a NAME= of its own", line, starts[i])
        names.add(name)


def _check_target(place: Target, text: str) -> None:
    if place.symbol is not None and len(place.symbol) > MAX_SYMBOL_LEN:
        raise ProbeSyntaxError(f"no kernel symbol is longer than {MAX_SYMBOL_LEN} characters", text, 0)
    if place.module is not None and len(place.module) > MAX_MODULE_NAME_LEN:
        raise ProbeSyntaxError(f"no module name is longer than {MAX_MODULE_NAME_LEN} characters", text, 0)


def probes_from_targets(
    targets: str, fetchargs: Sequence[str], ret: bool, maxactive: int | None, name: str | None, group: str
) -> list[Probe]:
    """The probes `kpctl add`, `kpctl trace` and probe sets make, checked as far as can be
    without a kernel: targets may list several, separated by commas, each getting the
    same fetch arguments."""
    texts = [t for t in targets.split(",") if t]
    if not texts:
        raise UsageError("no target given", "example: kpctl add vfs_read")
    if name is not None and len(texts) > 1:
        raise UsageError(f"one probe name for {len(texts)} targets: each probe needs a name of its own",
                         f"give one target, or let each probe take its default name ({clipped(targets)})")
    if name is not None:
        check_name(name, "probe")
    check_name(group, "group")
    if maxactive is not None and not 0 <= maxactive <= MAX_MAXACTIVE:
        raise UsageError(f"maxactive is 0 to {MAX_MAXACTIVE}, not {maxactive}")
    places = [parse_target(text) for text in texts]
    for text, (place, _) in zip(texts, places):
        _check_target(place, text)
    # After the length checks: its message quotes a target whole.
    check_given_once(texts, "target", "each target makes one probe: give it once")
    args = tuple(parse_fetch_arg(text) for text in fetchargs)
    # Once per kind of probe the targets make, not once per target (a glob makes 1000).
    for is_return in {ret or r for _, r in places}:
        check_fetch_args(args, is_return, fetchargs)
    probes = []
    for text, (place, is_return) in zip(texts, places):
        is_return = is_return or ret
        if maxactive is not None and not is_return:
            raise UsageError("maxactive applies to return probes only", f"make it a return probe: {clipped(text)}%return")
        probes.append(Probe(
            kind="r" if is_return else "p",
            target=place,
            event=name or default_event_name(place, is_return),
            group=group,
            args=args,
            maxactive=maxactive,
        ))
    return probes
