"""Build kpctl_kmod against the running kernel's headers (loader.py loads it).

The build happens in a directory per kernel release outside the source tree, so guests
of different arches or kernels that share one checkout never mix their objects.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from kpctl.errors import KpctlError
from kpctl.kmod import MODULE, modules_supported


def _find_source() -> Path:
    """kmod/ of the checkout kpctl runs from, else the copy `pip install .` put in
    PREFIX/share/kpctl/kmod (pyproject.toml's data-files)."""
    checkout = Path(__file__).resolve().parents[2] / "kmod"
    installed = Path(sys.prefix) / "share" / "kpctl" / "kmod"
    return checkout if (checkout / "Kbuild").exists() or not (installed / "Kbuild").exists() else installed


SOURCE = _find_source()
BUILD_ROOT = Path("/var/tmp/kpctl-kmod")
_SOURCE_FILES = ("Kbuild", "Makefile", "*.c", "*.h")


class KmodBuildError(KpctlError):
    """kpctl_kmod could not be built, loaded or unloaded."""


def require_module_support() -> None:
    if not modules_supported():
        raise KmodBuildError("this kernel cannot load modules (it was built without CONFIG_MODULES)",
                             "the tracefs backend needs no module: kpctl add without --backend kmod")


@dataclass(frozen=True)
class BuildResult:
    module: Path
    log: str  # make's output: the kernel tests require it free of warnings


def kernel_release() -> str:
    return os.uname().release


def build_dir(release: str) -> Path:
    return BUILD_ROOT / release


def _sync_sources(source: Path, dest: Path) -> bool:
    """Copy changed sources only, keeping their mtimes, so make rebuilds only what
    changed. Whether anything changed."""
    dest.mkdir(parents=True, exist_ok=True)
    wanted = {f.name: f for pattern in _SOURCE_FILES for f in source.glob(pattern)}
    if "Kbuild" not in wanted:
        raise KmodBuildError(f"no kpctl_kmod sources in {source}")
    changed = False
    for pattern in _SOURCE_FILES:
        for old in dest.glob(pattern):
            if old.name not in wanted:
                old.unlink()
                changed = True
    for name, src in wanted.items():
        copy = dest / name
        if not copy.exists() or copy.read_bytes() != src.read_bytes():
            shutil.copy2(src, copy)
            changed = True
    return changed


def _up_to_date(module: Path, log: Path, kdir: Path) -> bool:
    """The module was built from these sources against these headers: make would only
    confirm it, which costs Kbuild's whole start-up (half a minute in an emulated guest)."""
    if not (module.exists() and log.exists()):
        return False
    headers = [kdir / name for name in ("Makefile", ".config", "Module.symvers")]
    newest = max((h.stat().st_mtime for h in headers if h.exists()), default=0.0)
    return module.stat().st_mtime >= newest


def build(release: str | None = None, source: Path = SOURCE) -> BuildResult:
    """Build the module for a kernel release (default: the running kernel)."""
    release = release or kernel_release()
    require_module_support()
    kdir = Path("/lib/modules") / release / "build"
    if not (kdir / "Makefile").exists():
        raise KmodBuildError(
            f"no headers for kernel {release} ({kdir} is missing)",
            f"install the headers of this kernel (Debian's kernels: apt install linux-headers-{release})",
        )
    dest = build_dir(release)
    module, log = dest / f"{MODULE}.ko", dest / "build.log"
    if not _sync_sources(source, dest) and _up_to_date(module, log, kdir):
        return BuildResult(module, log.read_text())
    log.unlink(missing_ok=True)
    proc = subprocess.run(
        ["make", "-C", str(dest), f"KDIR={kdir}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False,
    )
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-20:])
        raise KmodBuildError(f"building kpctl_kmod for {release} failed", tail)
    log.write_text(proc.stdout)
    return BuildResult(module, proc.stdout)
