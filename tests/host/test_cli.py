"""The CLI through click's runner, against a fake tracefs: a directory holding files a
real kernel wrote. The fake accepts every write, so these tests cover parsing, rendering
and error messages; what the kernel does is for tests/kernel."""
from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from captured import DATA
from click.testing import CliRunner

from kpctl.cli import main as cli_module
from kpctl.cli import reference
from kpctl.cli.main import cli
from kpctl.tracefs import Tracefs

CAPTURE = DATA / "x86_64-6.1"
EVENTS = "p:kpctl/open do_sys_openat2 dfd=$arg1:s32 path=+0($arg2):ustring\nr10:kpctl/open_ret do_sys_openat2 ret=$retval:s32\np:other/keep vfs_write\n"


class FakeTracefs(Tracefs):
    """Acts on kprobe_events like the kernel at its simplest: a definition is appended,
    ``-:GROUP/EVENT`` deletes it. Every command is recorded in ``commands``."""

    commands: list[str]
    refuse: set[str]  # commands the fake kernel refuses with EINVAL

    @contextmanager
    def command_writer(self, relative: str) -> Iterator[Callable[[str], None]]:
        path = self.path(relative)

        def write(text: str) -> None:
            # Several lines in one write run in order up to the first refused one.
            for command in text.split("\n"):
                if command in self.refuse:
                    raise OSError(errno.EINVAL, "Invalid argument")
                self.commands.append(command)
                lines = path.read_text().splitlines()
                if command.startswith("-:"):
                    lines = [line for line in lines if f":{command[2:]} " not in line]
                else:
                    lines.append(command)
                path.write_text("".join(f"{line}\n" for line in lines))

        yield write

    def remove_instance(self, relative: str) -> bool:
        shutil.rmtree(self.path(relative))
        return True

    def write_value(self, relative: str, value: str) -> None:
        super().write_value(relative, value)
        self.sum_enables()

    def sum_enables(self) -> None:
        """Each instance's events/enable: 0 when all its events are off, 1 when all are
        on, X when mixed (as system_enable_read() reports)."""
        for events in self.path("instances").glob("*/events"):
            states = {f.read_text().strip() for f in events.glob("*/*/enable")}
            (events / "enable").write_text("0\n" if states <= {"0"} else "1\n" if states == {"1"} else "X\n")


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeTracefs:
    root, debugfs, proc = tmp_path / "tracing", tmp_path / "debug", tmp_path / "proc"
    for d in (root, debugfs / "kprobes", proc):
        d.mkdir(parents=True)
    shutil.copy(CAPTURE / "README", root / "README")
    (root / "kprobe_events").write_text(EVENTS)
    (root / "kprobe_profile").write_text("  open  12  0\n  open_ret  11  1\n  keep  5  0\n")
    (root / "available_filter_functions").write_text((CAPTURE / "available_filter_functions.sample").read_text())
    (root / "error_log").write_text("")
    for event in ("open", "open_ret", "vfs_read", "vfs_write"):
        d = root / "instances/kpctl/events/kpctl" / event
        d.mkdir(parents=True)
        (d / "enable").write_text("1\n" if event == "open" else "0\n")
        (d / "filter").write_text("none\n")
    (root / "instances/kpctl/trace").write_text("")
    (debugfs / "kprobes/list").write_text((CAPTURE / "kprobes-list").read_text())
    (debugfs / "kprobes/blacklist").write_text((CAPTURE / "blacklist.head").read_text())
    (proc / "kallsyms").write_text((CAPTURE / "kallsyms.sample").read_text())
    tracefs = FakeTracefs(root, debugfs, proc)
    tracefs.sum_enables()
    tracefs.commands = []
    tracefs.refuse = set()
    monkeypatch.setattr(cli_module, "open_tracefs", lambda: tracefs)
    return tracefs


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_list_shows_only_kpctl_group_with_state_and_backend(fake: Tracefs) -> None:
    code, out = run("list", "--json")
    rows = json.loads(out)
    assert code == 0
    assert [(r["name"], r["kind"], r["enabled"], r["backend"]) for r in rows] == [
        ("open", "entry", True, "tracefs"), ("open_ret", "return", False, "tracefs"),
    ]
    assert rows[0]["kprobe"] == "FTRACE"  # from debug/kprobes/list


def test_list_table_has_a_column_per_field(fake: Tracefs) -> None:
    code, out = run("list")
    assert out.splitlines()[0].split() == ["NAME", "BACKEND", "KIND", "TARGET", "ARGS", "ENABLED", "FILTER", "KPROBE", "OWNER"]


def test_stats_pairs_profile_lines_with_kpctl_probes(fake: Tracefs) -> None:
    code, out = run("stats", "--json")
    assert json.loads(out) == [
        {"name": "open", "backend": "tracefs", "hits": 12, "misses": 0},
        {"name": "open_ret", "backend": "tracefs", "hits": 11, "misses": 1},
    ]


def test_add_appends_one_line_per_target_and_enables_them(fake: Tracefs) -> None:
    code, out = run("add", "vfs_read,vfs_write", "count=$arg3:u64")
    assert code == 0, out
    assert fake.read("kprobe_events") == EVENTS + (
        "p:kpctl/vfs_read vfs_read count=$arg3:u64\np:kpctl/vfs_write vfs_write count=$arg3:u64\n"
    )
    assert fake.read("instances/kpctl/events/kpctl/vfs_read/enable") == "1\n"
    assert out == (
        "added kpctl/vfs_read: p:kpctl/vfs_read vfs_read count=$arg3:u64\n"
        "added kpctl/vfs_write: p:kpctl/vfs_write vfs_write count=$arg3:u64\n"
    )


def test_add_existing_name_changes_nothing(fake: Tracefs) -> None:
    code, out = run("add", "vfs_read", "--name", "open")
    assert (code, out) == (1, "Error: a probe named open already exists in group kpctl\nchoose another with --name, or remove it first: kpctl rm open\n")
    assert fake.read("kprobe_events") == EVENTS


def test_bad_fetcharg_is_one_error_line_with_the_spot_marked(fake: Tracefs) -> None:
    code, out = run("add", "vfs_read", "x=+0($arg1")
    assert (code, out) == (2, "Error: dereference brace is not closed\n  x=+0($arg1\n            ^\n")


@pytest.mark.parametrize(("args", "message", "status"), [
    (["add", "vfs_read,vfs_write", "--name", "x"], "Error: one probe name for 2 targets: each probe needs a name of its own", 2),
    (["add", "vfs_read", "--maxactive", "4"], "Error: maxactive applies to return probes only", 2),
    (["add", "vfs_read", "--name", "bad-name"], "Error: invalid probe name 'bad-name'", 2),
    (["add", "vfs_read", "--group", "bad-group"], "Error: invalid group name 'bad-group'", 2),
    (["rm", "opne"], "Error: no probe named opne in group kpctl", 1),
    (["enable", "nope"], "Error: no probe named nope in group kpctl", 1),
    (["watch", "nope"], "Error: no probe named nope in group kpctl", 1),
])
def test_expected_failures_print_one_error_line_and_exit_2_for_usage_else_1(
    fake: Tracefs, args: list[str], message: str, status: int,
) -> None:
    """Usage errors exit 2 as click's own do; refusals and missing things exit 1."""
    code, out = run(*args)
    assert code == status and out.splitlines()[0] == message


def test_a_bad_offset_is_marked_where_it_goes_wrong(fake: Tracefs) -> None:
    assert run("add", "vfs_read+0xzz") == (
        2, "Error: target must be SYMBOL, MOD:SYMBOL, SYMBOL+OFFS, SYMBOL%return or ADDRESS\n  vfs_read+0xzz\n             ^\n")


def test_a_newline_in_an_argument_keeps_the_mark_on_one_line(fake: Tracefs) -> None:
    code, out = run("add", "vfs_read", "x=+0(\n$arg1")
    assert code == 2 and out.splitlines()[1:] == ["  x=+0(\\n$arg1", "       ^"]  # under the newline


def test_rm_suggests_a_close_name(fake: Tracefs) -> None:
    assert run("rm", "opne")[1].splitlines()[1] == "did you mean: open?"


def test_rm_with_neither_names_nor_all_is_a_usage_error(fake: Tracefs) -> None:
    code, out = run("rm")
    assert code == 2 and "give probe NAMEs or --all" in out


def test_rm_with_both_names_and_all_says_not_both(fake: Tracefs) -> None:
    code, out = run("rm", "--all", "open")
    assert code == 2 and "Error: give probe NAMEs or --all, not both" in out
    assert "p:kpctl/open " in fake.read("kprobe_events")


def test_a_target_given_twice_says_so(fake: Tracefs) -> None:
    before = fake.read("kprobe_events")
    assert run("add", "vfs_read,vfs_write,vfs_read") == (
        2, "Error: target vfs_read is given twice\neach target makes one probe: give it once\n")
    assert fake.read("kprobe_events") == before


def test_a_comm_longer_than_the_kernel_keeps_is_cut_and_said(fake: FakeTracefs) -> None:
    fake.path("instances/kpctl/trace_pipe").write_text(
        "systemd-journal-365 [000] ..... 16.417567: open: (do_sys_openat2+0x0/0x170) dfd=-100 path=\"/a\"\n")
    code, out = run("watch", "--comm", "systemd-journald", "--json")
    assert code == 0
    assert "kpctl: the kernel keeps 15 bytes of a task's name: --comm systemd-journald matches systemd-journal" in out
    assert "kpctl: watching 1 probe; Ctrl-C ends" in out  # stdout has JSON only: readiness goes to stderr
    [hit] = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert hit["comm"] == "systemd-journal"


def test_rm_all_removes_kpctl_probes_and_leaves_other_groups(fake: FakeTracefs) -> None:
    code, out = run("rm", "--all")
    assert out == "removed kpctl/open\nremoved kpctl/open_ret\n"
    assert fake.commands == ["-:kpctl/open", "-:kpctl/open_ret"]
    assert fake.read("kprobe_events") == "p:other/keep vfs_write\n"
    assert not fake.path("instances/kpctl").exists()


def test_disable_reaches_the_instance_of_a_second_watch(fake: FakeTracefs) -> None:
    second = fake.path("instances/kpctl-watch-4242/events/kpctl/open")
    second.mkdir(parents=True)
    (second / "enable").write_text("1\n")
    code, out = run("disable", "open")
    assert (code, out) == (0, "disabled kpctl/open\n")
    assert fake.read("instances/kpctl/events/kpctl/open/enable") == "0\n"
    assert fake.read("instances/kpctl-watch-4242/events/kpctl/open/enable") == "0\n"


def test_enable_and_add_reach_the_instance_of_a_second_watch(fake: FakeTracefs) -> None:
    (fake.proc / "4242").mkdir()  # the second watch, alive
    for event in ("open", "open_ret", "vfs_read"):
        d = fake.path(f"instances/kpctl-watch-4242/events/kpctl/{event}")
        d.mkdir(parents=True)
        (d / "enable").write_text("0\n")
        (d / "filter").write_text("none\n")
    assert run("enable", "open_ret")[0] == 0
    assert fake.read("instances/kpctl-watch-4242/events/kpctl/open_ret/enable") == "1\n"
    assert run("add", "vfs_read", "--filter", "common_pid != 1")[0] == 0
    assert fake.read("instances/kpctl-watch-4242/events/kpctl/vfs_read/enable") == "1\n"
    assert fake.read("instances/kpctl-watch-4242/events/kpctl/vfs_read/filter") == "common_pid != 1\n"


def test_rm_keeps_the_instance_while_a_disabled_probe_has_a_filter_there(fake: FakeTracefs) -> None:
    fake.write_value("instances/kpctl/events/kpctl/open/enable", "0")
    fake.write_value("instances/kpctl/events/kpctl/open_ret/filter", "ret < 0")
    code, out = run("rm", "open")
    assert code == 0, out
    assert fake.read("instances/kpctl/events/kpctl/open_ret/filter") == "ret < 0\n"


def test_rm_all_keeps_the_instance_while_another_group_records_there(fake: FakeTracefs) -> None:
    fake.path("instances/kpctl/events/other/keep").mkdir(parents=True)
    fake.path("instances/kpctl/events/other/keep/enable").write_text("")
    fake.write_value("instances/kpctl/events/other/keep/enable", "1")
    code, out = run("rm", "--all")
    assert code == 0, out
    assert fake.read("instances/kpctl/events/other/keep/enable") == "1\n"


def test_funcs_of_a_missing_name_fails_and_names_close_ones(fake: Tracefs) -> None:
    assert run("funcs", "do_sys_openat3") == (1, "Error: no function named do_sys_openat3: not in kallsyms: inlined, "
                                                 "optimized away or misspelled; close names: do_sys_openat2, do_sys_open\n")


def test_funcs_glob_lists_matching_functions(fake: Tracefs) -> None:
    code, out = run("funcs", "vfs_*", "--json")
    assert [r["name"] for r in json.loads(out)] == ["vfs_read", "vfs_write"]


def test_funcs_says_a_data_symbol_is_not_a_function(fake: Tracefs) -> None:
    assert json.loads(run("funcs", "jiffies", "--json")[1])[0]["note"] == "a data symbol (kallsyms type D), not a function"


@pytest.mark.parametrize("command", list(reference.commands()), ids=" ".join)
def test_every_command_help_has_an_example(command: tuple[str, ...]) -> None:
    code, out = run(*command, "--help")
    assert code == 0 and "Example" in out


def test_the_command_reference_is_in_step_with_the_code() -> None:
    doc = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
    assert doc.read_text() == reference.render(), "docs/cli.md is stale: run make docs"


def test_cli_import_stays_light() -> None:
    """`kpctl --help` and `kpctl list` start fast: nothing heavy at import time."""
    code = "import sys, kpctl.cli.main; print(sorted(m for m in ('tabulate', 'pyroute2', 'kpctl.tracefs', 'json') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_list_finds_the_kprobe_an_ibt_kernel_moved_past_endbr(fake: FakeTracefs) -> None:
    """6.12 on x86 lists a probe written at vfs_write+0 as vfs_write+0x4."""
    (fake.debugfs / "kprobes/list").write_text((DATA / "x86_64-6.12" / "kprobes-list").read_text())
    fake.append_command("kprobe_events", "p:kpctl/vfs_write vfs_write")
    rows = json.loads(run("list", "--json")[1])
    assert rows[-1]["name"] == "vfs_write" and rows[-1]["kprobe"] == "DISABLED,FTRACE"


def test_watch_json_prints_typed_hits_of_kpctl_probes(fake: FakeTracefs) -> None:
    """The fake trace_pipe is a plain file: watch reads it to its end and stops."""
    fake.path("instances/kpctl/trace_pipe").write_text(
        "cat-365 [000] ..... 16.417567: open: (do_sys_openat2+0x0/0x170) dfd=-100 path=\"/etc/a b\"\n"
        "cat-365 [000] ..... 16.417638: open_ret: ([unknown/kretprobe'd] <- do_sys_openat2) ret=-2\n"
        "CPU:0 [LOST 7 EVENTS]\n"
    )
    result = CliRunner().invoke(cli, ["watch", "--json"])
    hits = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.exit_code == 0
    assert hits == [
        {"time": 16.417567, "cpu": 0, "tid": 365, "comm": "cat", "probe": "open", "backend": "tracefs",
         "where": "do_sys_openat2+0x0", "args": {"dfd": -100, "path": "/etc/a b"}},
        {"time": 16.417638, "cpu": 0, "tid": 365, "comm": "cat", "probe": "open_ret", "backend": "tracefs",
         "where": "[unknown/kretprobe'd] <- do_sys_openat2", "args": {"ret": -2}},
        {"lost": 7, "cpu": 0},
    ]
    assert fake.read("instances/kpctl/trace") == "", "without --clear the hits waiting are read, not dropped"


def test_watch_clear_empties_only_its_own_instances_buffer(fake: FakeTracefs) -> None:
    fake.path("instances/kpctl/trace_pipe").write_text("")
    fake.path("trace").write_text("global\n")
    result = CliRunner().invoke(cli, ["watch", "--clear"])
    assert result.exit_code == 0, result.output
    assert fake.read("instances/kpctl/trace") == "\n"
    assert fake.read("trace") == "global\n"


def test_refused_target_rolls_back_and_shows_the_kernels_reason(fake: FakeTracefs) -> None:
    line = "p:kpctl/do_sys_openat3 do_sys_openat3"
    fake.refuse.add(line)
    fake.path("error_log").write_text(
        "[   16.836587] trace_kprobe: error: Invalid probed address or symbol\n"
        f"  Command: {line}\n" + " " * (11 + 23) + "^\n"
    )
    code, out = run("add", "vfs_read,do_sys_openat3")
    assert (code, out) == (1, (
        "Error: kernel rejected probe kpctl/do_sys_openat3: Invalid probed address or symbol\n"
        f"  {line}\n"
        "                         ^\n"
        "unknown symbol do_sys_openat3: not in kallsyms: inlined, optimized away or misspelled; "
        "close names: do_sys_openat2, do_sys_open\n"
    ))
    assert fake.commands == ["p:kpctl/vfs_read vfs_read", "-:kpctl/vfs_read"]
    assert fake.read("kprobe_events") == EVENTS


def test_under_json_an_error_is_also_a_json_object_on_stdout(fake: FakeTracefs) -> None:
    result = CliRunner().invoke(cli, ["rm", "opne", "--json"])
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {
        "error": "no probe named opne in group kpctl", "hint": "did you mean: open?", "exit_status": 1}
    assert result.stderr == "Error: no probe named opne in group kpctl\ndid you mean: open?\n"


def test_a_usage_error_under_json_says_exit_status_2(fake: FakeTracefs) -> None:
    result = CliRunner().invoke(cli, ["add", "vfs_read+0xzz", "--json"])
    assert result.exit_code == 2 and json.loads(result.stdout)["exit_status"] == 2


def test_rm_takes_a_glob_and_reports_json(fake: FakeTracefs) -> None:
    code, out = run("rm", "open*", "--json")
    assert code == 0 and json.loads(out) == {"group": "kpctl", "removed": ["open", "open_ret"]}
    assert fake.read("kprobe_events") == "p:other/keep vfs_write\n"


def test_a_glob_that_matches_nothing_changes_nothing(fake: FakeTracefs) -> None:
    assert run("disable", "open", "vfs_*") == (1, "Error: no probe matches vfs_* in group kpctl\nsee: kpctl list\n")
    assert fake.read("instances/kpctl/events/kpctl/open/enable") == "1\n"


def test_enable_takes_a_glob(fake: FakeTracefs) -> None:
    code, out = run("enable", "open_*")
    assert (code, out) == (0, "enabled kpctl/open_ret\n")
    assert fake.read("instances/kpctl/events/kpctl/open_ret/enable") == "1\n"


def test_add_dry_run_prints_the_lines_and_addresses_and_changes_nothing(fake: FakeTracefs) -> None:
    address = next(int(line.split()[0], 16) for line in (CAPTURE / "kallsyms.sample").read_text().splitlines()
                   if line.split()[2] == "vfs_read")
    code, out = run("add", "--dry-run", "vfs_read+5", "count=$arg3:u64")
    assert code == 0
    assert out.splitlines() == [
        "p:kpctl/vfs_read_5 vfs_read+5 count=$arg3:u64",
        "instances/kpctl/events/kpctl/vfs_read_5/enable: 1",
        f"# vfs_read_5: vfs_read+5 at {address + 5:#x}",
    ]
    assert fake.commands == [] and fake.read("kprobe_events") == EVENTS


def test_a_probe_on_a_module_that_is_not_loaded_gets_a_warning(fake: FakeTracefs) -> None:
    (fake.proc / "modules").write_text("ext4 1000000 1 - Live 0x0000000000000000\n")
    code, out = run("add", "--dry-run", "kprobe:vfs_write")
    assert code == 0 and out.startswith("kpctl: module kprobe is not loaded: its probes arm when it loads")
    code, out = run("add", "--dry-run", "ext4:ext4_file_open")
    assert code == 0 and "not loaded" not in out


def test_a_module_probe_on_a_kernel_without_modules_is_said_never_to_fire(fake: FakeTracefs) -> None:
    assert not (fake.proc / "modules").exists()  # no CONFIG_MODULES
    code, out = run("add", "--dry-run", "kprobe:vfs_write")
    assert code == 0 and out.startswith(
        "kpctl: module kprobe is not loaded: this kernel cannot load modules, so its probes never fire")


def test_funcs_of_nothing_is_a_usage_error(fake: FakeTracefs) -> None:
    assert run("funcs", "") == (2, "Error: give a function name or a glob\nkpctl funcs 'vfs_*'\n")


def test_add_takes_a_glob_of_probeable_functions(fake: FakeTracefs) -> None:
    code, out = run("add", "--dry-run", "--disabled", "vfs_*%return")
    assert code == 0
    assert [line for line in out.splitlines() if not line.startswith("#")] == [
        "r:kpctl/vfs_read_ret vfs_read", "r:kpctl/vfs_write_ret vfs_write"]


def test_a_glob_on_a_kernel_without_kprobe_events_says_why_nothing_matches(fake: FakeTracefs) -> None:
    fake.path("kprobe_events").unlink()
    assert run("add", "vfs_*") == (1, "Error: no probeable function matches vfs_*: 2 match, and this kernel has no "
                                      "kprobe_events: nothing can be probed through it\nsee: kpctl funcs 'vfs_*'\n")


def test_a_glob_may_not_name_more_than_max_functions(fake: FakeTracefs) -> None:
    assert run("add", "vfs_*", "--max-functions", "1") == (
        2, "Error: 2 functions asked for, more than --max-functions 1\nnarrow the glob, or raise --max-functions\n")


def test_max_probes_still_works_in_add_for_a_release_with_a_note(fake: FakeTracefs) -> None:
    result = CliRunner().invoke(cli, ["add", "vfs_*", "--max-probes=1"], prog_name="kpctl")
    assert (result.exit_code, result.stderr) == (2, (
        "kpctl: add --max-probes is now --max-functions; --max-probes goes in the next release\n"
        "Error: 2 functions asked for, more than --max-functions 1\nnarrow the glob, or raise --max-functions\n"))
    assert fake.read("kprobe_events") == EVENTS


def test_stats_in_the_prometheus_format_parse_with_prometheus_client(fake: FakeTracefs) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    code, out = run("stats", "--format", "prometheus")
    assert code == 0
    families = {f.name: f for f in text_string_to_metric_families(out)}
    hits = {s.labels["probe"]: s.value for s in families["kpctl_probe_hits"].samples}
    assert hits == {"open": 12, "open_ret": 11}  # not the other group's probe
    assert families["kpctl_probe_hits"].type == "counter"
    [sample] = [s for s in families["kpctl_probe_misses"].samples if s.labels["probe"] == "open_ret"]
    assert sample.labels == {"group": "kpctl", "probe": "open_ret", "backend": "tracefs"} and sample.value == 1


def test_stats_textfile_is_replaced_whole(fake: FakeTracefs, tmp_path: Path) -> None:
    target = tmp_path / "kpctl.prom"
    target.write_text("old\n")
    assert run("stats", "--textfile", str(target)) == (0, "")
    assert target.read_text().startswith("# HELP kpctl_probe_hits_total ")
    assert [p.name for p in tmp_path.iterdir() if "kpctl.prom" in p.name] == ["kpctl.prom"]  # no temporary file left


def test_a_label_value_is_escaped() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from kpctl.metrics import Metric, exposition

    text = exposition([Metric("m", "gauge", "a\nb", [({"probe": 'a"b\\c\nd'}, 1.5)])])
    [family] = text_string_to_metric_families(text)
    assert family.samples[0].labels == {"probe": 'a"b\\c\nd'} and family.samples[0].value == 1.5


def _stat(pid: int, start: int) -> str:
    # /proc/PID/stat: a command name with a space and a parenthesis, then fields 3..
    return f"{pid} (py (x) 1) S " + " ".join(["0"] * 18) + f" {start} 0 0\n"


def test_gc_removes_what_dead_kpctl_processes_left_and_nothing_else(
    fake: FakeTracefs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kpctl import owners as owners_module

    (fake.proc / "4242").mkdir()  # alive, and its start time is 77
    (fake.proc / "4242" / "stat").write_text(_stat(4242, 77))
    for group, event in (("kpctl_count_999999", "vfs_read"), ("kpctl_count_4242", "vfs_read")):
        fake.append_command("kprobe_events", f"p:{group}/{event} vfs_read")
        (fake.path(f"instances/{group}")).mkdir()
    (fake.path("synthetic_events")).write_text("kpctl_lat_999999_0 u64 lat\n")
    fake.append_command("kprobe_events", "p:kpctl/traced vfs_write")
    records = tmp_path / "owners"
    (records / "kpctl").mkdir(parents=True)
    (records / "kpctl" / "traced").write_text(json.dumps({"what": "trace", "pid": 4242, "start": 76}))  # pid reused
    (records / "kpctl" / "open").write_text(json.dumps({"what": "trace", "pid": 4242, "start": 77}))  # alive
    monkeypatch.setattr(owners_module, "STATE", records)
    monkeypatch.setattr(owners_module.Owners.__init__, "__defaults__", (records, fake.proc))
    fake.commands = []

    code, out = run("gc", "--json")
    assert code == 0
    assert json.loads(out[out.index("{"):]) == {"removed": [
        "instance kpctl_count_999999", "synthetic event kpctl_lat_999999_0",
        "probe kpctl_count_999999/vfs_read", "probe kpctl/traced",
    ]}
    assert "!kpctl_lat_999999_0 u64 lat" in fake.commands
    events = fake.read("kprobe_events")
    assert "kpctl_count_4242/vfs_read" in events and "kpctl/open " in events and "other/keep" in events
    assert "kpctl/traced" not in events and "kpctl_count_999999" not in events
    assert fake.path("instances/kpctl_count_4242").exists()
    assert [p.name for p in (records / "kpctl").iterdir()] == ["open"]


def test_a_session_ends_by_removing_all_it_made_and_nothing_else(fake: FakeTracefs) -> None:
    """owned_session()'s end is gc's removal of this process's session: a dead session's
    things are left to gc, another tool's and kpctl's own probes stay."""
    from kpctl.gc import owned_session
    from kpctl.sessions import Session

    dead = Session("count", 999999)
    fake.append_command("kprobe_events", f"p:{dead.group}/vfs_read vfs_read")
    with owned_session(fake, "count") as session:
        assert session == Session("count", os.getpid())
        fake.make_instance(session.instance)
        fake.append_command("kprobe_events", f"p:{session.group}/vfs_read vfs_read")
        fake.append_command("kprobe_events", f"r:{session.group}/vfs_read_ret vfs_read")
    events = fake.read("kprobe_events")
    assert session.group not in events and not fake.path(session.instance).exists()
    assert f"{dead.group}/vfs_read " in events and "kpctl/open " in events and "other/keep " in events


def test_a_removal_the_kernel_refuses_ends_a_session_with_an_error_naming_it(
    fake: FakeTracefs, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kpctl.errors import KpctlError
    from kpctl.gc import owned_session

    monkeypatch.setattr(fake, "remove_instance", lambda relative: False)  # busy: a trigger holds it
    with pytest.raises(KpctlError, match=r"^could not remove instance kpctl_count_\d+: busy: something still holds it$"):
        with owned_session(fake, "count") as session:
            fake.make_instance(session.instance)


def test_gc_puts_back_a_setting_a_dead_process_changed_and_leaves_a_living_ones(
    fake: FakeTracefs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kpctl import owners as owners_module

    (fake.proc / "4242").mkdir()  # alive, and its start time is 77
    (fake.proc / "4242" / "stat").write_text(_stat(4242, 77))
    records = tmp_path / "run" / "owners"
    monkeypatch.setattr(owners_module.Owners.__init__, "__defaults__", (records, fake.proc))
    dead, living = tmp_path / "optimization", tmp_path / "other"
    dead.write_text("0\n")
    living.write_text("0\n")
    settings = tmp_path / "run" / "settings"
    settings.mkdir(parents=True)
    (settings / "999999-optimization.json").write_text(json.dumps(
        {"setting": str(dead), "before": "1", "what": "bench", "pid": 999999, "start": 5}))
    (settings / "4242-other.json").write_text(json.dumps(
        {"setting": str(living), "before": "1", "what": "bench", "pid": 4242, "start": 77}))
    code, out = run("gc", "--json")
    assert code == 0 and json.loads(out[out.index("{"):]) == {"removed": [f"setting {dead} (back to 1)"]}
    assert (dead.read_text(), living.read_text()) == ("1", "0\n")
    assert [p.name for p in settings.iterdir()] == ["4242-other.json"]


def test_a_setting_gc_cannot_put_back_is_named_and_kept_for_the_next_gc(tmp_path: Path) -> None:
    from kpctl.owners import SavedSettings

    unwritable = tmp_path / "a-directory"
    unwritable.mkdir()
    (tmp_path / "settings").mkdir()
    record = tmp_path / "settings" / "999999-x.json"
    record.write_text(json.dumps({"setting": str(unwritable), "before": "1", "what": "bench", "pid": 999999, "start": 5}))
    restored, left = SavedSettings(tmp_path / "settings", tmp_path).restore_orphans()
    assert (restored, left) == ([], [f"setting {unwritable}: Is a directory"]) and record.exists()


def test_a_changed_setting_is_recorded_before_it_changes_and_put_back_after(tmp_path: Path) -> None:
    from kpctl.owners import SavedSettings

    setting = tmp_path / "optimization"
    setting.write_text("1\n")
    saved = SavedSettings(tmp_path / "settings")
    with saved.changed(setting, "0", "bench"):
        [record] = (tmp_path / "settings").iterdir()
        assert json.loads(record.read_text())["before"] == "1" and setting.read_text() == "0"
    assert setting.read_text() == "1" and list((tmp_path / "settings").iterdir()) == []


def test_list_names_the_owner_of_a_traced_probe(fake: FakeTracefs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kpctl import owners as owners_module

    (fake.proc / "4242").mkdir()
    (fake.proc / "4242" / "stat").write_text(_stat(4242, 77))
    (tmp_path / "owners" / "kpctl").mkdir(parents=True)
    (tmp_path / "owners" / "kpctl" / "open").write_text(json.dumps({"what": "trace", "pid": 4242, "start": 77}))
    monkeypatch.setattr(owners_module.Owners.__init__, "__defaults__", (tmp_path / "owners", fake.proc))
    rows = {r["name"]: r["owner"] for r in json.loads(run("list", "--json")[1])}
    assert rows == {"open": "trace (pid 4242)", "open_ret": ""}


def test_gc_on_a_kernel_without_synthetic_or_kprobe_events_finds_nothing(fake: FakeTracefs) -> None:
    """Commands that make short-lived probes run gc first: it must not fail them there."""
    assert not fake.path("synthetic_events").exists()
    assert run("gc") == (0, "nothing to remove\n")
    fake.path("kprobe_events").unlink()
    assert run("gc") == (0, "nothing to remove\n")


@pytest.mark.parametrize("args", [["rm", "--all", "open", "--json"], ["list", "--json", "--bogus"], ["watch", "--json", "--count", "0"]])
def test_clicks_own_usage_errors_under_json_are_json_too(fake: FakeTracefs, args: list[str]) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and json.loads(result.stdout)["exit_status"] == 2
    assert "Error: " in result.stderr


def test_an_unwritable_textfile_is_one_error_line(fake: FakeTracefs, tmp_path: Path) -> None:
    code, out = run("stats", "--textfile", str(tmp_path / "no-such-dir" / "kpctl.prom"))
    assert code == 1 and out.startswith(f"Error: cannot write {tmp_path}/no-such-dir/kpctl.prom: No such file or directory\n")


def test_conflicting_watch_options_are_refused_before_trace_adds_a_probe(fake: FakeTracefs) -> None:
    assert run("trace", "vfs_read", "--pid", "1", "-c", "true") == (2, "Error: give one of --pid, --tid and --command\n")
    assert fake.commands == []


@pytest.mark.parametrize("command", ["rm", "enable", "disable"])
def test_a_probe_name_given_twice_says_so(fake: FakeTracefs, command: str) -> None:
    assert run(command, "open", "open_ret", "open") == (2, "Error: probe open is given twice\ngive it once\n")
    assert fake.commands == [] and fake.read("instances/kpctl/events/kpctl/open/enable") == "1\n"
    assert run(command, "open_ret", "open*")[0] == 0  # globs that overlap a name are no mistake


def test_watch_c_runs_the_command_and_shows_only_its_hits(fake: FakeTracefs) -> None:
    """trace_pipe as a FIFO that a writer holds open: it ends only when the command does."""
    pipe = fake.path("instances/kpctl/trace_pipe")
    os.mkfifo(pipe)
    writer = os.open(pipe, os.O_RDWR)
    try:
        os.write(writer, b'cat-365 [000] ..... 16.417567: open: (do_sys_openat2+0x0/0x170) dfd=-100 path="/a"\n')
        result = CliRunner().invoke(cli, ["watch", "--json", "-c", "true"])
    finally:
        os.close(writer)
    assert result.exit_code == 0 and result.stdout == ""  # the hit is another process's
    assert result.stderr.endswith("0 hits; true exited with status 0\n")
    assert run("watch", "-c", "no-such-command-kpctl")[0] == 2


@pytest.mark.parametrize(("fetcharg", "error"), [
    ("x", "FETCHARG x: a histogram's fetch argument needs a name, NAME=FETCH[:TYPE]"),
    ("pid", "a histogram needs a numeric fetch argument, not pid"),
])
def test_hist_names_its_own_fetcharg_not_a_by_it_does_not_have(fake: FakeTracefs, fetcharg: str, error: str) -> None:
    assert run("hist", "vfs_read", fetcharg) == (2, f"Error: {error}\nfor example: kpctl hist vfs_read 'size=$arg3:u64'\n")
