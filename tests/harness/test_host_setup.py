"""guest/host-setup.sh installs everything `make test` uses: run on a pristine Debian 12
root filesystem (guest/host-setup-check.sh), guest/preflight.sh must then find it all."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

GUEST_DIR = Path(__file__).resolve().parents[2] / "guest"


def test_preflight_names_what_is_missing() -> None:
    # With nothing on PATH every tool is missing: the check can fail, and says what.
    proc = subprocess.run(
        ["/bin/bash", str(GUEST_DIR / "preflight.sh")],
        env={"PATH": "/nonexistent"}, capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 1
    assert "preflight: missing: mmdebstrap" in proc.stderr
    assert "preflight: missing: qemu-system-aarch64" in proc.stderr
    assert "preflight: missing: the vagrant-libvirt plugin" in proc.stderr


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("mmdebstrap") is None,
                    reason="needs root and mmdebstrap (run `make setup`)")
def test_host_setup_on_a_pristine_machine_leaves_nothing_missing() -> None:
    proc = subprocess.run(
        ["bash", str(GUEST_DIR / "host-setup-check.sh")],
        capture_output=True, text=True, check=False, timeout=2400,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("preflight: every tool make test uses is here")
