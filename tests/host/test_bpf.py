"""The bpf backend's pure parts: records printed as trace_pipe lines that watch parses
like any other, and what it refuses before bcc is even loaded."""
from __future__ import annotations

import io
import json

import pytest
from click.testing import CliRunner
from test_cli import FakeTracefs, fake  # noqa: F401 (a fixture)

from kpctl.backends.bpf import BpfBackend, trace_line
from kpctl.cli.main import cli
from kpctl.errors import UsageError
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
