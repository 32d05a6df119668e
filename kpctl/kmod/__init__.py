"""kpctl_kmod, the bundled kernel module: its netlink client and its build.

This package's own namespace stays light: `kpctl list` asks is_loaded() at every start.
"""
from pathlib import Path

MODULE = "kpctl_kmod"
SYSFS = Path("/sys/module") / MODULE


def is_loaded() -> bool:
    return SYSFS.exists()


def modules_supported(proc: Path = Path("/proc")) -> bool:
    """The kernel loads modules at all (CONFIG_MODULES): it then has /proc/modules."""
    return (proc / "modules").exists()
