"""Host tests never reach the machine's own tracefs: a test that forgets its fake sees
no tracefs at all, on every machine, instead of mounting the host's (a bare CI machine
had none mounted, and the output then began with kpctl's mount note)."""
from __future__ import annotations

import pytest

import kpctl.tracefs


@pytest.fixture(autouse=True)
def no_host_tracefs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    nowhere = tmp_path_factory.mktemp("no-tracefs") / "absent"
    monkeypatch.setattr(kpctl.tracefs, "TRACEFS_MOUNTS", (nowhere / "tracing", nowhere / "debug/tracing"))
