"""Options that conflict or make no sense are usage errors, a file kpctl must not replace
is left as it was, and "nothing there" is one answer everywhere (issue 23). The fuzz and
the resource limits are in test_bad_input.py; the kernel's side in tests/kernel."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_cli import FakeTracefs, fake, run

from kpctl.cli.main import cli
from kpctl.errors import VanishedError
from kpctl.tracefs import Tracefs


def test_a_textfile_that_is_a_symlink_is_refused_and_left_as_it_was(fake: FakeTracefs, tmp_path: Path) -> None:
    target = tmp_path / "precious"
    target.write_text("keep\n")
    (tmp_path / "link").symlink_to(target)
    code, out = run("stats", "--textfile", str(tmp_path / "link"))
    assert code == 2 and out.startswith(f"Error: {tmp_path}/link is a symbolic link: ")
    assert (tmp_path / "link").is_symlink() and target.read_text() == "keep\n"


def test_a_textfile_that_is_a_fifo_is_refused_without_waiting_for_a_reader(fake: FakeTracefs, tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    code, out = run("stats", "--textfile", str(tmp_path / "fifo"))
    assert code == 2 and "is a FIFO" in out.splitlines()[0]


def test_a_textfile_that_is_a_regular_file_is_replaced_whole(fake: FakeTracefs, tmp_path: Path) -> None:
    (tmp_path / "kpctl.prom").write_text("old\n")
    assert run("stats", "--textfile", str(tmp_path / "kpctl.prom"))[0] == 0
    assert (tmp_path / "kpctl.prom").read_text().startswith("# HELP kpctl_probe_hits_total")


@pytest.mark.parametrize("args", [
    ["stats", "--textfile", "x.prom", "--json"],
    ["stats", "--textfile", "x.prom", "--format", "table"],
    ["stats", "--json", "--format", "prometheus"],
    ["count", "vfs_read", "--json", "--format", "table"],
    ["latency", "vfs_read", "-u", "-m"],
    ["stats", "--textfile", ""],
    ["rm", ""],
    ["enable", "open", ""],
    ["watch", "-d", "nan"],
    ["count", "vfs_read", "-i", "inf"],
    ["trace", "vfs_read", "-d", "-inf"],
    ["inspect", "vfs_read", "--wait", "nan"],
])
def test_conflicting_or_empty_or_non_finite_options_are_usage_errors(fake: FakeTracefs, args: list[str]) -> None:
    before = fake.path("kprobe_events").read_text()
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert "Error: " in result.output and "Traceback" not in result.output
    assert fake.path("kprobe_events").read_text() == before


@pytest.mark.parametrize("args", [["list"], ["stats"], ["rm", "--all"]])
def test_nothing_there_is_one_line_on_stderr_and_exit_0(fake: FakeTracefs, args: list[str]) -> None:
    result = CliRunner().invoke(cli, [*args, "--group", "empty"])
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "no probes in group empty\n")


def test_deleting_a_set_that_is_not_there_says_so_in_the_same_way(fake: FakeTracefs, tmp_path: Path) -> None:
    (tmp_path / "set.yaml").write_text("name: gone\nprobes:\n  - target: vfs_read\n")
    result = CliRunner().invoke(cli, ["apply", "--delete", "-f", str(tmp_path / "set.yaml")])
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "no probes of set gone in group kpctl\n")


def test_add_dry_run_checks_a_spec_where_there_is_no_kernel() -> None:
    # conftest leaves no tracefs: as on a laptop or a build machine
    result = CliRunner().invoke(cli, ["add", "--dry-run", "--ret", "vfs_read", "ret=$retval:s64", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["requests"][0] == "r:kpctl/vfs_read_ret vfs_read ret=$retval:s64"
    assert result.stderr.startswith("kpctl: checked the spec only: ")


def test_add_dry_run_refuses_a_bad_spec_where_there_is_no_kernel_as_where_there_is_one() -> None:
    result = CliRunner().invoke(cli, ["add", "--dry-run", "vfs_read", "x=$arg1:s99"])
    assert result.exit_code == 2 and result.output.startswith("Error: unknown type s99 ")


def test_a_control_file_that_vanished_is_one_error_not_a_traceback(tmp_path: Path) -> None:
    with pytest.raises(VanishedError, match="events/kpctl/gone/enable is gone: another process removed it"):
        Tracefs(tmp_path).write_value("events/kpctl/gone/enable", "1")


def test_watch_with_nothing_to_watch_where_nothing_can_be_added_does_not_say_add_one(fake: FakeTracefs) -> None:
    fake.path("kprobe_events").unlink()  # a kernel without kprobe events; no module here either
    code, out = run("watch", "-d", "1")
    assert (code, out) == (1, "Error: no enabled probe to watch\nand none can be added here: kpctl doctor says what "
                              "the kernel lacks\n")


def test_apply_dry_run_checks_a_set_where_there_is_no_kernel(tmp_path: Path) -> None:
    (tmp_path / "set.yaml").write_text("name: reads\nprobes:\n  - target: vfs_read\n    args: ['size=$arg3:u64']\n")
    result = CliRunner().invoke(cli, ["apply", "--dry-run", "-f", str(tmp_path / "set.yaml")])
    assert (result.exit_code, result.stdout) == (0, "p:kpctl/vfs_read vfs_read size=$arg3:u64\n")
    assert result.stderr.startswith("kpctl: checked the set only: ")


def test_apply_dry_run_refuses_a_bad_set_where_there_is_no_kernel(tmp_path: Path) -> None:
    (tmp_path / "set.yaml").write_text("name: reads\nprobes:\n  - target: vfs_read\n    args: ['size=$arg3:s99']\n")
    result = CliRunner().invoke(cli, ["apply", "--dry-run", "-f", str(tmp_path / "set.yaml")])
    assert result.exit_code == 2 and result.output.startswith("Error: ")
