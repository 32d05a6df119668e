"""The bpf backend's pure parts: records printed as trace_pipe lines that watch parses
like any other, and what it refuses before bcc is even loaded; and bcc's builds, whose
output stays off stdout and explains a failure only."""
from __future__ import annotations

import ctypes
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from click.testing import CliRunner
from test_cli import FakeTracefs, fake  # noqa: F401 (a fixture)

from kpctl.backends.bpf import BpfBackend, trace_line
from kpctl.bcc_glue import INSTALL_HINT, SHOWN_LINES, compile_program
from kpctl.cli.main import cli
from kpctl.errors import KpctlError, UsageError
from kpctl.hits import HitStream
from kpctl.model import probes_from_targets


def test_a_record_reads_back_as_the_hit_it_was() -> None:
    [probe] = probes_from_targets("vfs_read", ["fd=$arg1:s32", "size=$arg3:u64", "$arg2", "who=$comm"], False, None, None, "kpctl")
    # Raw values in the probe's argument order; the unnamed third is arg3, as the kernel names it.
    line = trace_line(probe, "cat", 365, 1, 16_417_567_891, [(1 << 64) - 100, 4096, 0x7FFD1000, 0])
    out = io.StringIO()
    stream = HitStream(out, [probe], as_json=True)
    stream.feed(line)
    hit = json.loads(out.getvalue())
    assert hit == {"time": 16.417567, "cpu": 1, "tid": 365, "comm": "cat", "probe": "vfs_read", "backend": "",
                   "where": "vfs_read+0x0", "args": {"fd": -100, "size": 4096, "arg3": 0x7FFD1000, "who": "cat"}}


def test_a_return_record_names_the_function() -> None:
    [probe] = probes_from_targets("vfs_read", ["ret=$retval:s64"], True, None, None, "kpctl")
    out = io.StringIO()
    stream = HitStream(out, [probe], as_json=True)
    stream.feed(trace_line(probe, "cat", 7, 0, 1_000_000_000, [5]))
    hit = json.loads(out.getvalue())
    assert hit["where"] == " <- vfs_read" and hit["args"] == {"ret": 5} and hit["probe"] == "vfs_read_ret"


@pytest.mark.parametrize(("fetchargs", "message"), [
    (["+0($arg2):string"], "the bpf backend fetches $arg1..$arg6, $retval and $comm, not +0($arg2)"),
    (["$arg2:string"], "the bpf backend prints integer types (u32, s64, x64, ...), not string"),
])
def test_what_bpf_cannot_fetch_is_refused_before_bcc_loads(fetchargs: list[str], message: str) -> None:
    probes = probes_from_targets("vfs_read", fetchargs, False, None, None, "kpctl")
    with pytest.raises(UsageError) as e:
        BpfBackend(None, "kpctl").requests(probes)  # type: ignore[arg-type]
    assert e.value.message == message


def test_without_bcc_the_error_says_what_to_install(fake: FakeTracefs, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bcc" else real(name, *a))
    result = CliRunner().invoke(cli, ["trace", "--backend", "bpf", "vfs_read"])
    assert result.exit_code == 1
    assert result.output.splitlines()[:2] == [
        "Error: backend bpf is not available: bcc is not installed for this Python",
        "install Debian's python3-bpfcc (apt install python3-bpfcc); in a venv, make it with python3 -m venv "
        "--system-site-packages so that it sees bcc",
    ]


# bcc as it behaves without kernel headers (loader.cc): its C++ prints to C's buffered
# stdout, clang to fd 2; the build fails with as many clang errors as the text says.
NOISY_BCC = """
import ctypes
import os


class BPF:
    def __init__(self, text):
        ctypes.CDLL(None).printf(b"Unable to find kernel headers.\\n")
        os.write(1, b"chdir(/lib/modules/6.1.0/build): No such file or directory\\n")
        os.write(2, b"".join(b"/virtual/main.c:%d: error: nope\\n" % n for n in range(int(text or 0))))
        if text:
            raise Exception("Failed to compile BPF module <text>")
"""


@pytest.fixture
def noisy_bcc(monkeypatch: pytest.MonkeyPatch) -> None:
    bcc = ModuleType("bcc")
    exec(NOISY_BCC, bcc.__dict__)
    monkeypatch.setitem(sys.modules, "bcc", bcc)


def test_a_build_that_works_prints_nothing(noisy_bcc: None, capfd: pytest.CaptureFixture[str]) -> None:
    assert type(compile_program("")).__name__ == "BPF"
    ctypes.CDLL(None).fflush(None)  # whatever C still buffered would reach fd 1 now
    assert capfd.readouterr() == ("", "")


def test_a_build_that_fails_shows_what_bcc_and_clang_said(noisy_bcc: None, capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(KpctlError) as e:
        compile_program("2")
    ctypes.CDLL(None).fflush(None)
    assert capfd.readouterr() == ("", "")
    assert e.value.message == "bcc could not build the BPF program: Failed to compile BPF module <text>"
    assert sorted((e.value.hint or "").splitlines()) == [  # C's buffer reaches the file at the flush, not in order
        "/virtual/main.c:0: error: nope", "/virtual/main.c:1: error: nope",
        "Unable to find kernel headers.", "chdir(/lib/modules/6.1.0/build): No such file or directory"]


def test_a_failed_build_shows_its_last_lines_only(noisy_bcc: None) -> None:
    with pytest.raises(KpctlError) as e:
        compile_program("100")
    assert (e.value.hint or "").splitlines() == [f"/virtual/main.c:{n}: error: nope" for n in range(100 - SHOWN_LINES, 100)]


def test_without_bcc_compiling_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "bcc", None)  # import bcc: ImportError
    with pytest.raises(KpctlError) as e:
        compile_program("")
    assert (e.value.message, e.value.hint) == ("bcc is not installed for this Python", INSTALL_HINT)


def test_json_on_a_pipe_stays_json_when_bcc_talks(tmp_path: Path) -> None:
    # As `kpctl bench --json | jq` runs: C's stdout is a pipe, so fully buffered (unless
    # PYTHONUNBUFFERED), and flushed at exit unless the build's end flushes it into the
    # kept output.
    (tmp_path / "bcc.py").write_text(NOISY_BCC)
    program = "import json\nfrom kpctl.bcc_glue import compile_program\ncompile_program('')\nprint(json.dumps({'rows': []}))"
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"},
           "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, env=env, check=True)
    assert (done.stdout, done.stderr) == ('{"rows": []}\n', "")
