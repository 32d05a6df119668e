"""Kernel symbols: which functions a kprobe can sit on, and why not when it cannot.

Sources: /proc/kallsyms (every symbol; addresses read as 0 without root), the kprobe
blacklist in debugfs (functions and areas the kernel refuses to probe, NOKPROBE_SYMBOL and
friends) and tracefs available_filter_functions (functions ftrace can trace; one missing
from it is notrace or in a noinstr section). Each file is read once, when first needed:
kallsyms has about 100,000 lines. By name it answers what may be probed; sorted by
address, how big a function is and what an address is (inspect).
"""
from __future__ import annotations

import bisect
import difflib
import fnmatch
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from operator import attrgetter
from pathlib import Path
from typing import NamedTuple

TEXT_TYPES = frozenset("tTwW")
# Run-time code pages (kprobe instruction slots, ftrace trampolines) are one page each.
_PAGE = 4096
# Suffixes GCC gives clones of a function (interprocedural SRA, constant propagation, partial inlining).
_CLONE_MARKERS = (".isra.", ".constprop.", ".part.", ".cold", ".llvm.")


def _wider_regex(glob: str) -> str:
    """A regular expression for kallsyms names that matches at least what glob does:
    each wildcard and [class] one stretch of non-blanks (fnmatch decides the rest)."""
    out, i = [], 0
    while i < len(glob):
        c = glob[i]
        if c == "[":
            j = i + 1 + (glob[i + 1:i + 2] == "!")
            j = glob.find("]", j + (glob[j:j + 1] == "]"))
            if j != -1:  # a class: one character
                out.append(r"\S")
                i = j + 1
                continue
        out.append(r"\S*" if c == "*" else r"\S" if c == "?" else re.escape(c))
        i += 1
    return "".join(out)


class KernelSymbol(NamedTuple):  # a tuple: kallsyms makes 100,000 of them, a dataclass is slower
    name: str
    address: int
    type: str  # kallsyms type letter: t/T text, d/D data, ...
    module: str | None


@dataclass(frozen=True)
class FunctionStatus:
    name: str
    probeable: bool
    reason: str  # empty when probeable and unremarkable
    module: str | None = None


def _judged_names(name: str) -> set[str]:
    """name and, for a clone (foo.isra.0), its parent's: the kernel's blacklist and notrace
    checks look both up (a suffixed symbol is cut at its first '.')."""
    return {name, name.split(".", 1)[0]}


class KernelSymbols:
    """kallsyms, the kprobe blacklist and the traceable functions of one kernel."""

    def __init__(
        self, kallsyms: Path, blacklist: Path, filter_functions: Path, kprobe_events: Path | None = None,
        configs: Sequence[Path] = (),
    ) -> None:
        self._kallsyms = kallsyms
        self._blacklist = blacklist
        self._filter_functions = filter_functions
        self._kprobe_events = kprobe_events
        self._configs = configs  # the kernel's build configuration, where it may be (.gz or text)

    @cached_property
    def _text(self) -> str:
        with open(self._kallsyms, errors="replace") as f:
            return f.read()

    @cached_property
    def by_name(self) -> dict[str, list[KernelSymbol]]:
        table: dict[str, list[KernelSymbol]] = {}
        for fields in map(str.split, self._text.splitlines()):
            if len(fields) == 3:
                address, kind, name = fields
                symbol = KernelSymbol(name, int(address, 16), kind, None)
            elif len(fields) == 4:
                address, kind, name, module = fields
                symbol = KernelSymbol(name, int(address, 16), kind, module.strip("[]"))
            else:
                continue
            if name in table:
                table[name].append(symbol)
            else:
                table[name] = [symbol]
        self.__dict__.pop("_text")  # parsed: the table answers from now on
        return table

    @cached_property
    def functions(self) -> list[str]:
        return sorted(n for n, syms in self.by_name.items() if any(s.type in TEXT_TYPES for s in syms))

    @cached_property
    def blacklisted(self) -> frozenset[str] | None:
        """Names on the kprobe blacklist; None when debugfs is not readable."""
        try:
            text = self._blacklist.read_text(errors="replace")
        except OSError:
            return None
        # Lines are "0xSTART-0xEND\tNAME" (module entries add "[MOD]").
        return frozenset(line.split()[1] for line in text.splitlines() if len(line.split()) >= 2)

    @cached_property
    def traceable(self) -> frozenset[str] | None:
        """available_filter_functions; None when it cannot be read."""
        try:
            text = self._filter_functions.read_text(errors="replace")
        except OSError:
            return None
        return frozenset(line.split(" ", 1)[0] for line in text.splitlines() if line)

    @cached_property
    def probes_on_notrace(self) -> bool | None:
        """Whether kprobe events may sit on notrace functions (CONFIG_KPROBE_EVENTS_ON_NOTRACE,
        off in distribution kernels); None when the kernel's configuration is unknown."""
        for path in self._configs:
            try:
                if path.suffix == ".gz":
                    import gzip  # only here: most kernels' configs are plain text in /boot

                    text = gzip.decompress(path.read_bytes()).decode(errors="replace")
                else:
                    text = path.read_text(errors="replace")
            except OSError:
                continue
            return "\nCONFIG_KPROBE_EVENTS_ON_NOTRACE=y\n" in f"\n{text}"
        return None

    def _notrace(self, name: str) -> bool:
        """Not in available_filter_functions, as the kernel judges it: a clone (foo.isra.0)
        by its parent's name too (trace_kprobe.c, within_notrace_func())."""
        traceable = self.traceable
        return traceable is not None and not _judged_names(name) & traceable

    def suggest(self, name: str, limit: int = 5) -> list[str]:
        """Function names close to name (do_sys_open -> do_sys_openat2).

        difflib over all 100,000 names takes seconds on an emulated guest: compare only
        names that share name's first three characters or contain it.
        """
        head = name[:3]
        pool = [n for n in self.functions if n.startswith(head) or name in n]
        return difflib.get_close_matches(name, pool, n=limit, cutoff=0.6)

    def match(self, pattern: str) -> list[str]:
        """Function names matching a shell glob."""
        if not any(c in pattern for c in "*?["):
            return [pattern]
        return sorted(self._named_like(pattern))

    def statuses(self, pattern: str) -> list[FunctionStatus]:
        """status() of each function pattern names, a glob's sorted; kallsyms is read once
        (a glob's matches carry their symbols)."""
        if not any(c in pattern for c in "*?["):
            return [self.status(pattern)]
        named = self._named_like(pattern)
        return [self.status(name, named[name]) for name in sorted(named)]

    def _named_like(self, glob: str) -> dict[str, list[KernelSymbol]]:
        """The symbols of each function whose name matches glob."""
        return {n: symbols for n, symbols in self._symbols_like(glob).items() if any(s.type in TEXT_TYPES for s in symbols)}

    def _symbols_like(self, glob: str) -> dict[str, list[KernelSymbol]]:
        """kallsyms' entries under each name that matches glob. Before kallsyms is parsed
        whole, one regular expression finds them in its text: five times faster than the
        parse, which a glob alone (kpctl count 'vfs_*') need not pay."""
        if "by_name" in self.__dict__:
            return {n: self.by_name[n] for n in fnmatch.filter(self.by_name, glob)}
        found: dict[str, list[KernelSymbol]] = {}
        line = re.compile(rf"^([0-9a-f]+) (\S) ({_wider_regex(glob)})(?:\s+\[(\S+)\])?$", re.M)
        for address, kind, name, module in line.findall(self._text):
            if fnmatch.fnmatchcase(name, glob):
                found.setdefault(name, []).append(KernelSymbol(name, int(address, 16), kind, module or None))
        return found

    def probeable_matches(self, pattern: str) -> tuple[list[str], dict[str, str]]:
        """The functions a glob names that a probe can sit on, and those it leaves out
        with why: not probeable, not unique (only an address would name it), notrace."""
        kept: list[str] = []
        left: dict[str, str] = {}
        for name, symbols in sorted(self._named_like(pattern).items()):
            status = self.status(name, symbols)
            why = status.reason if not status.probeable else next(
                (n for n in status.reason.split("; ") if n.startswith(("not unique", "notrace"))), "")
            if why:
                left[name] = why
            else:
                kept.append(name)
        return kept, left

    @cached_property
    def _probes_possible(self) -> bool:
        return self._kprobe_events is None or self._kprobe_events.exists()

    @cached_property
    def _init_text(self) -> tuple[int, int] | None:
        """Where vmlinux's __init code was: kallsyms keeps its symbols after boot frees it."""
        bounds = self._symbols_like("_[se]inittext")
        start, end = (bounds.get(n, [KernelSymbol(n, 0, "", None)])[0].address for n in ("_sinittext", "_einittext"))
        return (start, end) if start and end else None

    def status(self, name: str, symbols: Sequence[KernelSymbol] | None = None) -> FunctionStatus:
        """Whether a kprobe can sit on function name (whose kallsyms entries are symbols,
        when known), and if not, why."""
        if not name:
            return FunctionStatus(name, False, "no name given")
        if symbols is None:
            symbols = self.by_name.get(name, [])
        functions = [s for s in symbols if s.type in TEXT_TYPES]
        if not functions:
            if symbols:
                return FunctionStatus(name, False, f"a data symbol (kallsyms type {symbols[0].type}), not a function")
            clones = [n for n in self.functions if n.startswith(name + ".")]
            if clones:
                return FunctionStatus(
                    name, False, f"not in kallsyms under this name: the compiler renamed it; probe {', '.join(clones[:3])}"
                )
            close = self.suggest(name)
            hint = f"; close names: {', '.join(close)}" if close else ""
            return FunctionStatus(name, False, f"not in kallsyms: inlined, optimized away or misspelled{hint}")
        module = functions[0].module
        if not self._probes_possible:
            return FunctionStatus(name, False, "this kernel has no kprobe_events: nothing can be probed through it", module)
        if module is not None and (module.startswith("__builtin__") or module == "bpf"):
            return FunctionStatus(name, False, f"code the kernel made at run time ([{module}]), not a function", module)
        init = self._init_text
        if module is None and init is not None and all(init[0] <= f.address < init[1] for f in functions):
            return FunctionStatus(name, False, "__init code, freed once the kernel booted: nothing is there", module)
        # A clone (foo.isra.0) of a blacklisted function is refused too (within_kprobe_blacklist()).
        if self.blacklisted is not None and _judged_names(name) & self.blacklisted:
            return FunctionStatus(name, False, "on the kprobe blacklist: the kernel never probes it", module)
        notrace = self._notrace(name)
        if notrace and not self.probes_on_notrace:
            unless = ("CONFIG_KPROBE_EVENTS_ON_NOTRACE is not set" if self.probes_on_notrace is False
                      else "unless built with CONFIG_KPROBE_EVENTS_ON_NOTRACE; its configuration cannot be read")
            return FunctionStatus(
                name, False, f"notrace (not in available_filter_functions): the kernel refuses kprobe events there ({unless})",
                module,
            )
        notes = []
        if len(functions) > 1:
            # MOD:SYM names a copy only when it is its module's one: never one in vmlinux.
            per_module = Counter(f.module for f in functions)
            named = sorted(m for m, n in per_module.items() if m is not None and n == 1)
            how = ("MOD:SYM or an address tells them apart" if len(named) == len(functions)
                   else f"only an address tells them all apart (MOD:SYM names the one in {', '.join(named)})" if named
                   else "only an address tells them apart")
            notes.append(
                f"not unique: {len(functions)} functions have this name; {how} (kernels since v6.7 refuse "
                "the bare name, commit b022f0c7e404; older ones probe the first)"
            )
        if any(marker in name for marker in _CLONE_MARKERS):
            notes.append("a compiler-made clone: its arguments may not match the source")
        if notrace:
            notes.append("notrace (not in available_filter_functions; CONFIG_KPROBE_EVENTS_ON_NOTRACE allows it): "
                         "the probe traps, ftrace cannot help")
        if self.blacklisted is None:
            notes.append("not checked against the kprobe blacklist (debugfs kprobes/blacklist cannot be read)")
        if self.traceable is None:
            notes.append("not checked for notrace (available_filter_functions cannot be read)")
        return FunctionStatus(name, True, "; ".join(notes), module)

    def functions_named(self, name: str, module: str | None = None) -> list[KernelSymbol]:
        """The functions kallsyms has under name (in module, when given)."""
        return [s for s in self.by_name.get(name, ()) if s.type in TEXT_TYPES and (module is None or s.module == module)]

    # --- by address ------------------------------------------------------------------

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

    def address_of(self, name: str) -> int | None:
        return next((s.address for s in self.by_name.get(name, ())), None)

    def dynamic(self) -> list[KernelSymbol]:
        """Pages of code the kernel made at run time, which kallsyms lists as modules
        "__builtin__kprobes" (kprobe_insn_page, kprobe_optinsn_page: v5.1, commit
        d002b8bc33b9) and "__builtin__ftrace" (ftrace_trampoline): read afresh, because
        arming a probe is what creates them."""
        found = []
        with open(self._kallsyms, errors="replace") as f:
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
        if s.type not in TEXT_TYPES or address - s.address >= self.size_of(s) > 0:
            return None
        text = f"{s.name}+{address - s.address:#x}" if address != s.address else s.name
        return f"{text} [{s.module}]" if s.module else text

    def namer(self) -> Callable[[int], str | None]:
        """name(), with the run-time code pages as they are now; kallsyms sorted now, not
        at the first name asked for (a counting interval's table)."""
        self._sorted  # noqa: B018 (a cached property, computed here)
        dynamic = self.dynamic()
        return lambda address: self.name(address, dynamic)
