"""The /proc/kcore reader against small ELF64 cores built here, laid out like the kernel's
(fs/proc/kcore.c): a PT_NOTE, then PT_LOADs at sparse offsets far past the data."""
from __future__ import annotations

import errno
import os
import struct
from pathlib import Path

import pytest

from kpctl.inspect import kcore
from kpctl.inspect.kcore import Kcore, KcoreError, Segment

TEXT = 0xFFFFFFFF81000000
MODULES = 0xFFFFFFFFC0000000
VFS_READ = bytes.fromhex("0f1f440000415741564155")  # as measured on x86_64 6.1


def build_core(path: Path, loads: list[tuple[int, bytes]], endian: str = "<", elf_class: int = 2) -> None:
    """An ELF64 core: header, program headers (PT_NOTE first), then each PT_LOAD's bytes
    at an offset that keeps the file sparse, as the kernel's does."""
    phnum = 1 + len(loads)
    phoff = 64
    data_at = 0x10000
    ident = b"\x7fELF" + bytes([elf_class, 1 if endian == "<" else 2, 1]) + bytes(9)
    header = ident + struct.pack(endian + "HHIQQQIHHHHHH", 4, 62, 1, 0, phoff, 0, 0, 64, 56, phnum, 0, 0, 0)
    phdrs = struct.pack(endian + "IIQQQQQQ", 4, 0, 0x1000, 0, 0, 16, 0, 4)  # PT_NOTE
    blobs = []
    for i, (vaddr, blob) in enumerate(loads):
        offset = data_at + i * 0x100000
        phdrs += struct.pack(endian + "IIQQQQQQ", 1, 7, offset, vaddr, 0, len(blob), len(blob), 4096)
        blobs.append((offset, blob))
    with open(path, "wb") as f:
        f.write(header + phdrs)
        for offset, blob in blobs:
            f.seek(offset)
            f.write(blob)


@pytest.fixture
def core(tmp_path: Path) -> Path:
    path = tmp_path / "kcore"
    text = bytes(0x9E0) + VFS_READ + bytes(32)
    build_core(path, [(TEXT, text), (MODULES, b"\xcc" * 64)])
    return path


def test_reads_at_the_address_of_the_covering_segment(core: Path) -> None:
    with Kcore(core) as k:
        assert k.read(TEXT + 0x9E0, len(VFS_READ)) == VFS_READ
        assert k.read(TEXT + 0x9E5, 2) == b"\x41\x57"
        assert k.read(MODULES + 8, 4) == b"\xcc" * 4
        assert [s.vaddr for s in k.segments] == [TEXT, MODULES]  # PT_NOTE is not a segment


def test_big_endian_core(tmp_path: Path) -> None:
    path = tmp_path / "kcore"
    build_core(path, [(TEXT, b"\xd4\x20\x00\x80")], endian=">")
    with Kcore(path) as k:
        assert k.read(TEXT, 4) == b"\xd4\x20\x00\x80"


def test_address_outside_every_segment(core: Path) -> None:
    with Kcore(core) as k, pytest.raises(KcoreError, match="in no segment"):
        k.read(0x1000, 4)


def test_read_crossing_the_end_of_a_segment(core: Path) -> None:
    with Kcore(core) as k, pytest.raises(KcoreError, match="in no segment"):
        k.read(MODULES + 60, 8)


def test_segment_covers() -> None:
    s = Segment(0x1000, 0x100, 0)
    assert s.covers(0x1000, 0x100) and not s.covers(0xFFF, 2) and not s.covers(0x10FF, 2)


@pytest.mark.parametrize(("content", "message"), [
    (b"not an elf file at all" + bytes(64), "not an ELF file"),
    (b"\x7fELF\x01\x01\x01" + bytes(80), "not ELF64"),
    (b"\x7fELF\x02\x07\x01" + bytes(80), "unknown ELF byte order"),
])
def test_not_a_kernel_core(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "kcore"
    path.write_bytes(content)
    with pytest.raises(KcoreError, match=message):
        Kcore(path)


def test_missing_kcore_names_the_config(tmp_path: Path) -> None:
    with pytest.raises(KcoreError, match="CONFIG_PROC_KCORE") as caught:
        Kcore(tmp_path / "absent")
    assert caught.value.hint and "still work" in caught.value.hint


def _refuse_open(path: os.PathLike[str] | str, flags: int) -> int:
    raise PermissionError(errno.EPERM, "Operation not permitted")


def test_not_root(monkeypatch: pytest.MonkeyPatch, core: Path) -> None:
    monkeypatch.setattr(os, "open", _refuse_open)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(KcoreError, match="not root"):
        Kcore(core)


@pytest.mark.parametrize("level", ["integrity", "confidentiality"])
def test_locked_down(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, core: Path, level: str) -> None:
    lockdown = tmp_path / "lockdown"
    lockdown.write_text(" ".join(f"[{w}]" if w == level else w for w in ("none", "integrity", "confidentiality")) + "\n")
    monkeypatch.setattr(os, "open", _refuse_open)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    with pytest.raises(KcoreError, match=f"locked down \\({level}\\)"):
        Kcore(core, lockdown=lockdown)


def test_root_refused_without_lockdown(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, core: Path) -> None:
    lockdown = tmp_path / "lockdown"
    lockdown.write_text("[none] integrity confidentiality\n")
    monkeypatch.setattr(os, "open", _refuse_open)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    with pytest.raises(KcoreError, match="permission denied"):
        Kcore(core, lockdown=lockdown)


def test_hidden_addresses(tmp_path: Path) -> None:
    sysctl = tmp_path / "kptr_restrict"
    sysctl.write_text("2\n")
    error = kcore.hidden_addresses_error(sysctl)
    assert "kptr_restrict=2" in error.message and error.hint and "still work" in error.hint
