"""Counts in the Prometheus text exposition format (version 0.0.4), for node_exporter's
textfile collector or any scraper: `# HELP` and `# TYPE` per metric, then one sample
per line with its labels. Pure, but for write_textfile()."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from kpctl.errors import KpctlError


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


def write_textfile(path: Path, text: str) -> None:
    """Replace path with text at once: node_exporter must never read half a file, so the
    text goes to a temporary file in the same directory, renamed over path."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as e:
        raise KpctlError(f"cannot write {path}: {e.strerror}", "give a path in a directory that exists and this user may write") from None
