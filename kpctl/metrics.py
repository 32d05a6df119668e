"""Counts in the Prometheus text exposition format (version 0.0.4), for node_exporter's
textfile collector or any scraper: `# HELP` and `# TYPE` per metric, then one sample
per line with its labels. Pure, but for write_textfile()."""
from __future__ import annotations

import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from kpctl.errors import KpctlError, UsageError, clipped_path


@dataclass(frozen=True)
class Metric:
    name: str
    kind: str  # counter, gauge, histogram
    help: str
    samples: Sequence[tuple[Mapping[str, str], float]]
    # Per sample, what follows the name: a histogram's "_bucket" and "_count".
    suffixes: Sequence[str] = ()


def _label_value(text: str) -> str:
    # The format's only escapes in a label value: backslash, double quote, newline.
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def exposition(metrics: Sequence[Metric]) -> str:
    lines = []
    for metric in metrics:
        lines.append(f"# HELP {metric.name} {_help(metric.help)}")
        lines.append(f"# TYPE {metric.name} {metric.kind}")
        for n, (labels, value) in enumerate(metric.samples):
            name = metric.name + (metric.suffixes[n] if metric.suffixes else "")
            text = ",".join(f'{k}="{_label_value(v)}"' for k, v in labels.items())
            number = int(value) if float(value).is_integer() else value
            lines.append(f"{name}{{{text}}} {number}" if text else f"{name} {number}")
    return "\n".join(lines) + "\n"


def check_textfile(path: Path) -> None:
    """UsageError unless path may be replaced by a textfile: a regular file, or nothing.
    A device node, a FIFO, a symlink or a directory is never replaced
    (as root, renaming over /dev/full or a link to a system file would destroy it)."""
    shown = clipped_path(path)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as e:
        raise UsageError(f"cannot use {shown} as a textfile: {e.strerror}") from None
    if mode is not None and not stat.S_ISREG(mode):
        kind = next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file")
        raise UsageError(f"{shown} is {kind}: a textfile is a regular file, which kpctl replaces whole",
                         "give the path of a regular file, or of one to create")


_FILE_KINDS = (
    (stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
)


def write_textfile(path: Path, text: str) -> None:
    """Replace path with text at once: node_exporter must never read half a file, so the
    text goes to a temporary file in the same directory, renamed over path (checked by
    check_textfile() again just before: it may have changed since the command began)."""
    try:
        import tempfile  # only where a textfile is written: 0.14 s of start-up under emulation

        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.chmod(tmp, 0o644)
            check_textfile(path)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as e:
        raise KpctlError(f"cannot write {clipped_path(path)}: {e.strerror}",
                         "give a path in a directory that exists and this user may write") from None
