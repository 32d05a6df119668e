"""Load and unload kpctl_kmod, and tell its state."""
from __future__ import annotations

import ctypes
import errno
import os
import platform
from dataclasses import dataclass
from pathlib import Path

from kpctl.errors import KpctlError, PermissionDeniedError
from kpctl.kmod import MODULE, SYSFS, is_loaded
from kpctl.kmod.build import KmodBuildError, build_dir, kernel_release, require_module_support

# finit_module(2) and delete_module(2) have no wrapper in Python or glibc.
_SYSCALLS = {
    "x86_64": {"finit_module": 313, "delete_module": 176},
    "aarch64": {"finit_module": 273, "delete_module": 106},
}


@dataclass(frozen=True)
class KmodStatus:
    loaded: bool
    release: str
    module: Path | None  # the built .ko for this kernel, if any
    refcount: int | None = None
    max_probes: int | None = None
    max_instances: int | None = None  # return probe instances, all probes together



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
    require_module_support()
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
    require_module_support()
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
