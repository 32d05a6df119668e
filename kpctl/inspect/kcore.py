"""Live kernel text from /proc/kcore.

/proc/kcore is an ELF64 core file the kernel synthesizes on each read (fs/proc/kcore.c):
a PT_NOTE, then one PT_LOAD per region of kernel virtual memory (kernel text, vmalloc and
modules, the direct map, vmemmap). Reading at p_offset + (addr - p_vaddr) of the PT_LOAD
that covers addr returns the bytes at addr as the CPU sees them now, kprobe breakpoints
and ftrace calls included: read_kcore_iter() copies kernel text with
copy_from_kernel_nofault() (v6.5, commit 46c0d6d0904c; earlier kernels read it directly)
and module text through vread(). The file is sparse with offsets near 2**56, which pread()
handles; never read it sequentially.

Opening it needs CAP_SYS_RAWIO (open_kcore()) and is refused under lockdown's
confidentiality level (LOCKDOWN_KCORE, v5.4, commit 4e55e2ca5eac); both show as EPERM.
"""
from __future__ import annotations

import errno
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from kpctl.errors import KpctlError
from kpctl.tracefs import read_lockdown

KCORE = Path("/proc/kcore")
LOCKDOWN = Path("/sys/kernel/security/lockdown")

_ELFMAG = b"\x7fELF"
_ELFCLASS64 = 2
_ENDIAN = {1: "<", 2: ">"}  # EI_DATA: ELFDATA2LSB, ELFDATA2MSB
_PT_LOAD = 1
# What the rest of kpctl can still do when kcore is closed: the hint of every KcoreError.
_STILL_WORKS = "probes (add, watch, trace) and inspect's symbol, probeability and probe list still work"


class KcoreError(KpctlError):
    """/proc/kcore cannot give the bytes: the message says why, the hint what still works."""

    def __init__(self, message: str) -> None:
        super().__init__(message, _STILL_WORKS)


@dataclass(frozen=True)
class Segment:
    """One PT_LOAD of the core: kernel virtual addresses [vaddr, vaddr + size) at offset."""
    vaddr: int
    size: int
    offset: int

    def covers(self, address: int, length: int) -> bool:
        return self.vaddr <= address and address + length <= self.vaddr + self.size


def parse_segments(header: bytes, read_at: Callable[[int, int], bytes]) -> list[Segment]:
    """The PT_LOAD segments of an ELF64 core whose first bytes are header.

    read_at(offset, length) reads the program header table (it may lie anywhere)."""
    if header[:4] != _ELFMAG or len(header) < 64:
        raise KcoreError("/proc/kcore is not an ELF file")
    if header[4] != _ELFCLASS64:
        raise KcoreError("/proc/kcore is not ELF64: kpctl reads 64-bit kernels only")
    endian = _ENDIAN.get(header[5])
    if endian is None:
        raise KcoreError(f"/proc/kcore has an unknown ELF byte order {header[5]}")
    # Elf64_Ehdr: e_phoff at 32; e_phentsize and e_phnum at 54.
    (phoff,) = struct.unpack_from(endian + "Q", header, 32)
    phentsize, phnum = struct.unpack_from(endian + "HH", header, 54)
    table = read_at(phoff, phentsize * phnum)
    segments = []
    for i in range(phnum):
        # Elf64_Phdr: p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align.
        p_type, _, p_offset, p_vaddr, _, p_filesz, _, _ = struct.unpack_from(endian + "IIQQQQQQ", table, i * phentsize)
        if p_type == _PT_LOAD:
            segments.append(Segment(p_vaddr, p_filesz, p_offset))
    return segments


class Kcore:
    """Reads kernel memory by virtual address. Use as a context manager, or close()."""

    def __init__(self, path: Path = KCORE, lockdown: Path = LOCKDOWN) -> None:
        self.path = path
        try:
            self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError as e:
            raise KcoreError(f"{path} does not exist: this kernel is built without CONFIG_PROC_KCORE") from e
        except PermissionError as e:
            raise _permission_error(path, lockdown) from e
        try:
            self.segments = parse_segments(self._pread(0, 64), self._pread)
        except BaseException:
            os.close(self._fd)
            raise

    def _pread(self, offset: int, length: int) -> bytes:
        data = os.pread(self._fd, length, offset)
        if len(data) != length:
            raise KcoreError(f"{self.path}: short read at offset {offset:#x}")
        return data

    def segment_for(self, address: int, length: int = 1) -> Segment | None:
        return next((s for s in self.segments if s.covers(address, length)), None)

    def read(self, address: int, length: int) -> bytes:
        """length bytes of kernel memory at address, as they are now."""
        segment = self.segment_for(address, length)
        if segment is None:
            raise KcoreError(f"{address:#x}+{length} is in no segment of {self.path} (not kernel memory?)")
        try:
            return self._pread(segment.offset + address - segment.vaddr, length)
        except OSError as e:
            if e.errno == errno.EFAULT:  # an unmapped page in a vmalloc hole
                raise KcoreError(f"{address:#x} is not mapped") from e
            raise

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


def _permission_error(path: Path, lockdown: Path) -> KcoreError:
    if os.geteuid() != 0:
        return KcoreError(f"cannot read {path}: not root (it needs CAP_SYS_RAWIO)")
    level = read_lockdown(lockdown)
    if level not in (None, "none"):
        return KcoreError(f"cannot read {path}: the kernel is locked down ({level})")
    return KcoreError(f"cannot read {path}: permission denied (an LSM or a container forbids it)")



def hidden_addresses_error(kptr_restrict: Path = Path("/proc/sys/kernel/kptr_restrict")) -> KcoreError:
    """kallsyms printed every address as 0: kallsyms_show_value() hides them from readers
    without CAP_SYSLOG, and from everyone when kernel.kptr_restrict is 2."""
    try:
        level = kptr_restrict.read_text().strip()
    except OSError:
        level = "?"
    who = "this user" if os.geteuid() != 0 else "everyone"
    return KcoreError(
        f"/proc/kallsyms hides addresses from {who} (kernel.kptr_restrict={level}): "
        "no address to read code at; sysctl kernel.kptr_restrict=0 (or 1, as root) shows them"
    )
