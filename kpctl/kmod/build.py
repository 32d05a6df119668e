"""Build kpctl_kmod against the running kernel's headers, load it, unload it.

The build happens in a directory per kernel release outside the source tree, so guests
of different arches or kernels that share one checkout never mix their objects.
"""
from __future__ import annotations

import ctypes
import errno
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from kpctl.errors import KpctlError, PermissionDeniedError
from kpctl.kmod import MODULE, SYSFS, is_loaded


def _find_source() -> Path:
    """kmod/ of the checkout kpctl runs from, else the copy `pip install .` put in
    PREFIX/share/kpctl/kmod (pyproject.toml's data-files)."""
    checkout = Path(__file__).resolve().parents[2] / "kmod"
    installed = Path(sys.prefix) / "share" / "kpctl" / "kmod"
    return checkout if (checkout / "Kbuild").exists() or not (installed / "Kbuild").exists() else installed


SOURCE = _find_source()
BUILD_ROOT = Path("/var/tmp/kpctl-kmod")
_SOURCE_FILES = ("Kbuild", "Makefile", "*.c", "*.h")
# finit_module(2) and delete_module(2) have no wrapper in Python or glibc.
_SYSCALLS = {
    "x86_64": {"finit_module": 313, "delete_module": 176},
    "aarch64": {"finit_module": 273, "delete_module": 106},
}


class KmodBuildError(KpctlError):
    """kpctl_kmod could not be built, loaded or unloaded."""


@dataclass(frozen=True)
class BuildResult:
    module: Path
    log: str  # make's output: the kernel tests require it free of warnings


@dataclass(frozen=True)
class KmodStatus:
    loaded: bool
    release: str
    module: Path | None  # the built .ko for this kernel, if any
    refcount: int | None = None
    max_probes: int | None = None
    max_instances: int | None = None  # return probe instances, all probes together


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
    kdir = Path("/lib/modules") / release / "build"
    if not (kdir / "Makefile").exists():
        raise KmodBuildError(
            f"no headers for kernel {release} ({kdir} is missing)",
            f"install them: apt install linux-headers-{release}",
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


def _syscall(name: str, *args: object) -> None:
    numbers = _SYSCALLS.get(platform.machine())
    if numbers is None:
        raise KmodBuildError(f"kpctl does not know {name}(2) on {platform.machine()}")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(numbers[name], *args) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def load(module: Path | None = None, params: dict[str, int] | None = None) -> None:
    """Load the built module (default: the one built for the running kernel)."""
    module = module or build_dir(kernel_release()) / f"{MODULE}.ko"
    if not module.exists():
        raise KmodBuildError(f"{module} does not exist", "build it first: kpctl kmod build")
    args = " ".join(f"{k}={v}" for k, v in (params or {}).items()).encode()
    with open(module, "rb") as f:
        try:
            _syscall("finit_module", f.fileno(), ctypes.c_char_p(args), 0)
        except OSError as e:
            raise _load_error(e, module) from None


def _load_error(e: OSError, module: Path) -> KpctlError:
    if e.errno == errno.EEXIST:
        return KmodBuildError("kpctl_kmod is already loaded", "reload it: kpctl kmod unload && kpctl kmod load")
    if e.errno == errno.EPERM:
        return PermissionDeniedError("loading a kernel module needs root (CAP_SYS_MODULE)",
                                     "if root already: module loading may be locked down or disabled")
    if e.errno == errno.ENOEXEC:
        return KmodBuildError(f"{module} was built for another kernel", "rebuild it: kpctl kmod build")
    return KmodBuildError(f"cannot load {module}: {e.strerror}", "see the kernel log: dmesg | tail")


def unload() -> None:
    try:
        _syscall("delete_module", ctypes.c_char_p(MODULE.encode()), os.O_NONBLOCK)
    except OSError as e:
        if e.errno == errno.ENOENT:
            raise KmodBuildError("kpctl_kmod is not loaded") from None
        if e.errno == errno.EPERM:
            raise PermissionDeniedError("unloading a kernel module needs root (CAP_SYS_MODULE)") from None
        if e.errno in (errno.EBUSY, errno.EAGAIN):
            raise KmodBuildError("kpctl_kmod is in use", "a netlink dump may still be open; retry") from None
        raise KmodBuildError(f"cannot unload kpctl_kmod: {e.strerror}") from None


def status() -> KmodStatus:
    release = kernel_release()
    module = build_dir(release) / f"{MODULE}.ko"
    built = module if module.exists() else None
    if not is_loaded():
        return KmodStatus(False, release, built)
    return KmodStatus(
        True, release, built,
        refcount=int((SYSFS / "refcnt").read_text()),
        max_probes=int((SYSFS / "parameters" / "max_probes").read_text()),
        max_instances=int((SYSFS / "parameters" / "max_instances").read_text()),
    )
