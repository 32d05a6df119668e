"""Errors kpctl expects to happen. The CLI prints each as one ``Error: ...`` line, plus
a hint (which may mark a column of a probe line), and exits 2 for a UsageError (what was
typed is wrong: syntax, names, options that conflict), as click does for its own usage
errors, and 1 for the rest (the kernel refused, the machine lacks something). Anything
else is a bug and keeps its traceback."""
from __future__ import annotations

from collections.abc import Collection, Sequence


class KpctlError(Exception):
    """An expected failure, with an optional hint on how to fix it, and details (a
    verifier's log) that the CLI shows under -v."""

    def __init__(self, message: str, hint: str | None = None, details: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = details

    def __str__(self) -> str:
        return self.message


class UsageError(KpctlError):
    """What the user typed is wrong, whatever the kernel: exit status 2."""


def _shown(text: str) -> str:
    """text on one line: a newline or other control character as its escape."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def clipped(text: str, limit: int = 80) -> str:
    """What a message may quote of text the user gave: one line, at most about limit
    characters (a name can be 100,000 of them)."""
    text = _shown(text[:limit + 1])
    return text if len(text) <= limit else text[:limit] + "..."


def clipped_path(path: object) -> str:
    """A path as a message quotes it: the kernel's PATH_MAX (4096) bounds it already."""
    return clipped(str(path), 4096)


# How much of a long line mark_column() shows on each side of the caret.
_MARK_CONTEXT = 60


def mark_column(line: str, byte_offset: int) -> str:
    """The line, and below it a caret under the character at byte_offset; of a long
    line, the part around it.

    The kernel counts positions in bytes (trace_probe_log_err()); a caret placed by
    character count would drift after any non-ASCII byte.
    """
    encoded = line.encode(errors="surrogateescape")  # a command line's bytes need not be UTF-8
    before = _shown(encoded[:byte_offset].decode(errors="replace"))
    after = _shown(encoded[byte_offset:].decode(errors="replace"))
    if len(before) > _MARK_CONTEXT:
        before = "..." + before[-_MARK_CONTEXT:]
    if len(after) > _MARK_CONTEXT:
        after = after[:_MARK_CONTEXT] + "..."
    return f"  {before}{after}\n  {' ' * len(before)}^"


class ProbeLineError(KpctlError):
    """A probe definition line that is wrong at a known byte offset."""

    def __init__(self, message: str, line: str, offset: int, hint: str | None = None) -> None:
        marked = mark_column(line, offset)
        super().__init__(message, f"{marked}\n{hint}" if hint else marked)
        self.line = line
        self.offset = offset


class ProbeSyntaxError(ProbeLineError, UsageError):
    """kpctl's own parser refused the line before the kernel saw it."""


class KernelRejectedError(ProbeLineError):
    """The kernel refused a line written to kprobe_events; the message is its own."""


class TracefsError(KpctlError):
    """tracefs is missing, unmountable, or not writable by this user."""


class PermissionDeniedError(KpctlError):
    """Not root, or the kernel is locked down."""


class ProbeNotFoundError(KpctlError):
    """A probe name that kpctl's group does not have."""


def check_probe_names(names: Sequence[str], existing: Collection[str], where: str) -> None:
    """ProbeNotFoundError for the first of names not in existing, with close names as
    the hint; where is what was searched (\"group kpctl\")."""
    missing = [n for n in names if n not in existing]
    if not missing:
        return
    import difflib  # only on this error path: it slows every start-up otherwise

    close = difflib.get_close_matches(missing[0], list(existing), n=3) if len(missing[0]) <= 256 else []
    raise ProbeNotFoundError(
        f"no probe named {clipped(missing[0])} in {where}",
        f"did you mean: {', '.join(close)}?" if close else "see: kpctl list",
    )


def check_given_once(items: Sequence[str], what: str, hint: str = "give it once") -> None:
    """UsageError for the first of items given twice: the kernel would be asked twice
    and refuse the second ("already exists", "no such probe")."""
    twice = next((item for i, item in enumerate(items) if item in items[:i]), None)
    if twice is not None:
        raise UsageError(f"{what} {twice} is given twice", hint)


class VanishedError(KpctlError):
    """A tracefs file another process removed while kpctl was using it (a race, not a bug)."""


class ProbeExistsError(KpctlError):
    """A probe name that is already taken in kpctl's group."""


class ProbeBusyError(KpctlError):
    """The kernel refuses to remove an event something else still uses (EBUSY)."""


class UnknownSymbolError(KernelRejectedError):
    """The kernel refused a target symbol that /proc/kallsyms does not have."""
