"""Hints outside doctor that name another backend name it only where it works here."""
from __future__ import annotations

from pathlib import Path

import pytest

import kpctl.backends.bpf
from kpctl.errors import UsageError
from kpctl.model import probes_from_targets
from kpctl.registry import backend_type
from kpctl.tracefs import Tracefs


def refused_hint(tracefs: Path, monkeypatch: pytest.MonkeyPatch) -> str | None:
    """The hint of the bpf backend, opened as kpctl opens it, for a fetch it cannot make."""
    monkeypatch.setattr(kpctl.backends.bpf, "import_bcc", lambda: None)
    backend = backend_type("bpf").open(Tracefs(tracefs), "kpctl")
    with pytest.raises(UsageError) as e:
        backend.requests(probes_from_targets("vfs_read", ["+0($arg2):u64"], False, None, None, "kpctl"))
    return e.value.hint


def test_memory_the_bpf_backend_cannot_fetch_is_sent_to_the_tracefs_backend_where_it_has_kprobe_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "kprobe_events").write_text("")
    assert refused_hint(tmp_path, monkeypatch) == "use the tracefs backend for memory, registers and the rest"


def test_memory_the_bpf_backend_cannot_fetch_on_a_kernel_without_kprobe_events_is_told_what_it_lacks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert refused_hint(tmp_path, monkeypatch) == (
        "this kernel has no kprobe_events for the tracefs backend either: it needs CONFIG_KPROBE_EVENTS=y")
