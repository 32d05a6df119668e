"""The bpf backend on a real kernel: `kpctl trace --backend bpf` sees exactly the hits
it should, with the same columns and JSON as tracefs probes, and its probes vanish with
the process, SIGKILL included (the perf kprobe PMU's, not tracefs's)."""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require
from kmod_fixtures import WORKLOAD_RESULT, WORKLOAD_SYSCALL, run_workload, syscall_symbol

CHECKOUT = Path(__file__).resolve().parents[2]
KPROBES_LIST = Path("/sys/kernel/debug/kprobes/list")
CALLS = 20


@pytest.fixture(autouse=True)
def bpf() -> None:
    require(os.geteuid() == 0, "needs root")
    require(importlib.util.find_spec("bcc") is not None, "needs bcc (python3-bpfcc)")
    require(Path("/sys/bus/event_source/devices/kprobe/type").exists(), "needs the perf kprobe PMU")


def armed(symbol: str) -> list[str]:
    return [line for line in KPROBES_LIST.read_text().splitlines() if f" {symbol}+" in line]


def trace(*args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-m", "kpctl", "trace", "--backend", "bpf", *args], cwd=CHECKOUT,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return proc


def test_trace_sees_every_call_with_its_arguments_and_return_value() -> None:
    symbol = syscall_symbol(WORKLOAD_SYSCALL)
    before = armed(symbol)
    entry = trace(symbol, "regs=$arg1:x64", "--pid", str(os.getpid()), "--count", str(CALLS), "--json")
    ret = trace(symbol, "ret=$retval:s64", "--ret", "--pid", str(os.getpid()), "--count", str(CALLS), "--json")
    # A BPF probe is in debug/kprobes/list before its program is attached to it: with
    # --json, the line on stderr says when hits are being collected.
    for proc in (entry, ret):
        assert proc.stderr is not None
        ready = proc.stderr.readline()  # bcc compiles each program: slow under emulation
        assert ready.startswith("kpctl: watching 1 probe;"), (ready, proc.communicate())
    assert len(armed(symbol)) == len(before) + 2
    run_workload(CALLS)
    for proc in (entry, ret):
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        hits = [json.loads(line) for line in out.splitlines()]
        assert len(hits) == CALLS and {h["tid"] for h in hits} == {os.getpid()}
        assert {h["backend"] for h in hits} == {"bpf"} and {h["comm"] for h in hits} == {"python3"}
    assert {h["args"]["ret"] for h in hits} == {WORKLOAD_RESULT}
    assert armed(symbol) == before, "the BPF probes outlived kpctl"


def test_sigkill_takes_the_probes_with_the_process() -> None:
    symbol = syscall_symbol(WORKLOAD_SYSCALL)
    before = armed(symbol)
    proc = trace(symbol)
    assert proc.stdout is not None
    header = proc.stdout.readline()
    assert header.split()[:2] == ["TIME", "CPU"], (header, proc.communicate())
    assert len(armed(symbol)) == len(before) + 1
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert armed(symbol) == before
