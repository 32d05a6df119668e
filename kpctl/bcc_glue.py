"""bcc, as every part of kpctl loads it and builds BPF programs with it.

bcc is Debian's python3-bpfcc (the PyPI package named bcc is another thing), imported
only when a command needs it: the import costs seconds. While it builds a program, its
C library and clang print to file descriptors 1 and 2 ("Unable to find kernel headers
...", compiler diagnostics), where Python's sys.stdout redirection cannot catch them;
stdout is kpctl's own (JSON under --json), so that output is kept aside and shown only
as the explanation of a build that failed.
"""
from __future__ import annotations

import ctypes
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

from kpctl.errors import KpctlError

INSTALL_HINT = ("install Debian's python3-bpfcc (apt install python3-bpfcc); in a venv, make it with "
                "python3 -m venv --system-site-packages so that it sees bcc")
SHOWN_LINES = 40  # of a failed build's output: clang's first errors explain, its repeats do not


def import_bcc() -> Any:
    try:
        import bcc  # seconds of start-up: only when asked for
    except ImportError:
        raise KpctlError("bcc is not installed for this Python", INSTALL_HINT) from None
    return bcc


def compile_program(text: str) -> Any:
    """The bcc.BPF object of a C program; a KpctlError with the last SHOWN_LINES lines
    bcc and clang printed if it does not build. What they print goes nowhere else."""
    bcc = import_bcc()
    with tempfile.TemporaryFile() as output:
        try:
            with _descriptors_into(output):
                return bcc.BPF(text=text)
        except Exception as e:  # bcc raises plain Exceptions: "Failed to compile BPF module <text>"
            output.seek(0)
            lines = output.read().decode(errors="replace").splitlines()[-SHOWN_LINES:]
            raise KpctlError(f"bcc could not build the BPF program: {e}", "\n".join(lines) or None) from None


def _flush_all() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    # C's stdout is fully buffered into a pipe or a file, and bcc's C++ writes through it
    # without flushing: unflushed, its text would reach fd 1 at exit, after the restore.
    ctypes.CDLL(None).fflush(None)


@contextmanager
def _descriptors_into(output: IO[bytes]) -> Iterator[None]:
    """File descriptors 1 and 2 pointed at output for the block, restored however it ends."""
    _flush_all()  # what was written before goes where it was meant to
    saved = os.dup(1), os.dup(2)
    try:
        os.dup2(output.fileno(), 1)
        os.dup2(output.fileno(), 2)
        yield
    finally:
        _flush_all()  # what was written during the block goes into output
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
