"""Parsers of tracefs and debugfs files, against what real kernels wrote."""
from __future__ import annotations

import os
import re
import signal
import threading
from pathlib import Path

import pytest
from captured import CAPTURES

from kpctl.features import detect_features
from kpctl.tracefs import Tracefs, open_file, parse_error_log, parse_kprobe_list, parse_kprobe_profile


def error_cases(capture: Path) -> list[tuple[str, str]]:
    """(command written, error_log text after it) from capture.sh's error_log.cases."""
    text = (capture / "error_log.cases").read_text()
    return [(m[1], m[2]) for m in re.finditer(r"^### (.*)\n((?:(?!### ).*\n)*)", text, re.M)]


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
def test_error_log_entries_give_message_command_and_byte(capture: Path) -> None:
    logged = 0
    for command, log in error_cases(capture):
        entries = parse_error_log(log)
        if not entries:
            continue  # some refusals leave no entry (a bad first letter, $comm:u32 on 6.1)
        [entry] = entries
        assert entry.command == command and entry.source == "trace_kprobe"
        # A missing or conflicting piece is blamed one past the command's end.
        assert 0 <= entry.offset <= len(command) + 1
        logged += 1
    assert logged >= 10


def test_error_log_offset_is_the_byte_under_the_caret() -> None:
    log = (
        "[   16.789444] trace_kprobe: error: Unknown type is specified\n"
        "  Command: p:kpcap/b1 vfs_read x=$arg1:u7\n"
        "                                       ^\n"
    )
    [entry] = parse_error_log(log)
    assert entry.message == "Unknown type is specified"
    assert entry.command[entry.offset:] == "u7"


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
def test_kprobe_profile_lines_match_kprobe_events(capture: Path) -> None:
    rows = parse_kprobe_profile((capture / "kprobe_profile").read_text())
    events = [line.split()[0].split("/")[-1] for line in (capture / "kprobe_events").read_text().splitlines()]
    assert [name for name, _, _ in rows] == events


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
def test_kprobes_list_lines_parse(capture: Path) -> None:
    text = (capture / "kprobes-list").read_text()
    states = parse_kprobe_list(text)
    assert len(states) == len(text.splitlines())
    assert any(s.module for s in states) and all(s.where.count("+0x") == 1 for s in states)


def test_x86_probes_at_function_entry_use_ftrace() -> None:
    states = parse_kprobe_list("ffffffff84d669e0  k  vfs_read+0x0    [DISABLED][FTRACE]\n")
    assert states[0].flags == ("DISABLED", "FTRACE") and not states[0].is_return


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
def test_readme_features_match_what_the_kernel_accepted(capture: Path) -> None:
    features = detect_features((capture / "README").read_text())
    results = (capture / "probe-results").read_text()
    assert features["return_suffix"] == ("accepted: p:kpcap/retsfx vfs_read%return" in results)
    assert features["btf_args"] == ("accepted: p:kpcap/btf vfs_read count" in results)
    assert features["immediate"] == ("accepted: p:kpcap/imm" in results)


def test_open_file_loses_no_descriptor_to_a_ctrl_c_as_it_opens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Ctrl-C arriving while os.open() runs is raised once the descriptor is owned by
    a file object, which closes it: a leaked one keeps a tracefs instance busy."""
    target = tmp_path / "enable"
    target.write_text("0\n")
    real_open = os.open

    def open_then_interrupted(path: Path, flags: int) -> int:
        fd = real_open(path, flags)
        signal.raise_signal(signal.SIGINT)
        return fd

    monkeypatch.setattr(os, "open", open_then_interrupted)
    # Python's own Ctrl-C handler, even where the test runs with SIGINT ignored (a job
    # started in the background by a shell inherits SIG_IGN).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    before = set(os.listdir("/proc/self/fd"))
    try:
        with pytest.raises(KeyboardInterrupt):
            open_file(target, os.O_WRONLY | os.O_TRUNC)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert set(os.listdir("/proc/self/fd")) == before


def test_changes_are_serialized_across_kpctl_processes(tmp_path: Path) -> None:
    # flock locks belong to an open file: a second open, here in a thread, waits as
    # another kpctl process would.
    tracefs = Tracefs(tmp_path)
    order: list[str] = []

    def second() -> None:
        with tracefs.changing():
            order.append("second")

    with tracefs.changing():
        thread = threading.Thread(target=second)
        thread.start()
        thread.join(timeout=0.3)
        assert thread.is_alive()  # blocked while the first holds the lock
        order.append("first")
    thread.join(timeout=5)
    assert order == ["first", "second"]


def test_an_unmounted_tracefs_is_mounted_and_said_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As root, every command (doctor too) mounts tracefs where it is missing, says so on
    stderr, and leaves it mounted: the next command finds it and says nothing."""
    import subprocess

    from kpctl import tracefs as tracefs_module

    mounts = (tmp_path / "tracing", tmp_path / "debug" / "tracing")
    mounts[0].mkdir()
    asked: list[list[str]] = []

    def mount(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        asked.append(argv)
        (Path(argv[-1]) / "README").write_text("tracefs\n")
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(tracefs_module, "TRACEFS_MOUNTS", mounts)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(subprocess, "run", mount)
    said: list[str] = []
    for _ in range(2):
        assert tracefs_module.find_tracefs(say=said.append) == mounts[0]
    assert asked == [["mount", "-t", "tracefs", "nodev", str(mounts[0])]]
    assert said == [f"kpctl: mounted tracefs at {mounts[0]} (it stays mounted)"]
