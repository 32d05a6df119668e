"""`kpctl apply -f` on a real kernel: a probe set added once, a second apply changing
nothing, hits recorded, changes replaced, pruning and deletion leaving nothing, and a
probe the kernel refuses undoing the whole apply with error_log's message."""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import require
from kmod_fixtures import WORKLOAD_SYSCALL, run_workload, syscall_symbol

from kpctl.cli.main import cli
from kpctl.tracefs import Tracefs, find_tracefs

OTHER_PROBE = "p:other/kpctl_apply_keep vfs_write"
CALLS = 25


@pytest.fixture
def tracefs() -> Iterator[Tracefs]:
    tracefs = Tracefs(find_tracefs())
    require(os.geteuid() == 0 and tracefs.path("kprobe_events").exists(), "needs root and kprobe_events")
    tracefs.append_command("kprobe_events", OTHER_PROBE)
    try:
        yield tracefs
        assert ":kpctl/" not in tracefs.read("kprobe_events"), "the test left a kpctl probe behind"
        assert OTHER_PROBE in tracefs.read("kprobe_events").splitlines(), "another group's probe was lost"
    finally:
        tracefs.append_command("kprobe_events", "-:other/kpctl_apply_keep")


def probe_set(*probes: str) -> str:
    return "name: apply-test\nowner: kernel-tests\nprobes:\n" + "".join(probes)


def apply(tmp_path: Path, text: str, *options: str) -> dict:
    (tmp_path / "set.yaml").write_text(text)
    result = CliRunner().invoke(cli, ["apply", "-f", str(tmp_path / "set.yaml"), "--json", *options])
    assert result.exit_code == 0, result.output
    return json.loads(result.output[result.output.index("{"):])


def test_a_set_applies_once_counts_hits_and_is_deleted_whole(tracefs: Tracefs, tmp_path: Path) -> None:
    symbol = syscall_symbol(WORKLOAD_SYSCALL)
    text = probe_set(f"  - target: {symbol}\n    name: workload\n", "  - target: vfs_read\n    enabled: false\n")
    try:
        assert apply(tmp_path, text)["added"] == ["workload", "vfs_read"]
        assert apply(tmp_path, text)["changed"] is False
        run_workload(CALLS)
        stats = {r["name"]: r["hits"] for r in json.loads(CliRunner().invoke(cli, ["stats", "--json"]).output)}
        assert stats["workload"] >= CALLS and stats["vfs_read"] == 0  # disabled: armed by nothing
        listed = {r["name"]: r for r in json.loads(CliRunner().invoke(cli, ["list", "--json"]).output)}
        assert listed["workload"]["owner"] == "set apply-test (kernel-tests)" and not listed["vfs_read"]["enabled"]
    finally:
        assert sorted(apply(tmp_path, text, "--delete")["removed"]) == ["vfs_read", "workload"]


def test_a_changed_probe_is_replaced_and_prune_removes_what_the_file_dropped(tracefs: Tracefs, tmp_path: Path) -> None:
    text = probe_set("  - target: vfs_read\n    args: ['n=$arg3:u64']\n", "  - target: vfs_write\n")
    try:
        apply(tmp_path, text)
        changed = probe_set("  - target: vfs_read\n    args: ['n=$arg3:u32']\n    filter: 'n > 1'\n")
        result = apply(tmp_path, changed, "--prune")
        assert (result["replaced"], result["removed"]) == (["vfs_read"], ["vfs_write"])
        events = tracefs.read("kprobe_events")
        assert "p:kpctl/vfs_read vfs_read n=$arg3:u32" in events and "kpctl/vfs_write" not in events
        assert tracefs.read("instances/kpctl/events/kpctl/vfs_read/filter").strip() == "n > 1"
        assert apply(tmp_path, changed, "--prune")["changed"] is False
    finally:
        apply(tmp_path, text, "--delete")


def test_a_probe_the_kernel_refuses_undoes_the_apply(tracefs: Tracefs, tmp_path: Path) -> None:
    before = tracefs.read("kprobe_events")
    # A register kpctl leaves to the kernel to judge: the second probe fails after the first is in.
    (tmp_path / "set.yaml").write_text(probe_set("  - target: vfs_read\n", "  - target: vfs_write\n    args: ['x=%nosuchreg']\n"))
    result = CliRunner().invoke(cli, ["apply", "-f", str(tmp_path / "set.yaml")])
    assert result.exit_code == 1
    assert "kernel rejected" in result.output and "^" in result.output, result.output  # error_log's place
    assert tracefs.read("kprobe_events") == before
