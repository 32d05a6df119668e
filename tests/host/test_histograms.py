"""Hist files as the kernel prints them (Documentation/trace/histogram.rst), parsed."""
from __future__ import annotations

from kpctl.counting import Count, event_name, since
from kpctl.histograms import HistEntry, parse_hist, removal, trigger

PER_PID = """\
# event histogram
#
# trigger info: hist:keys=common_pid.execname:vals=hitcount:sort=hitcount.descending:size=8192 [active]
#

{ common_pid: python3         [       412] } hitcount:         50
{ common_pid: systemd-journal [       189] } hitcount:          3

Totals:
    Hits: 53
    Entries: 2
    Dropped: 0
"""

STACKS = """\
# event histogram
#
# trigger info: hist:keys=stacktrace:vals=hitcount:sort=hitcount.descending:size=8192 [active]
#

{ stacktrace:
         kprobe_dispatcher+0x3a/0x60
         vfs_read+0x5/0x1a0
         ksys_read+0x6b/0xf0
         do_syscall_64+0x58/0xc0
} hitcount:          5

Totals:
    Hits: 5
    Entries: 1
    Dropped: 2
"""


def test_entries_per_process_name_the_task_and_its_pid() -> None:
    assert parse_hist(PER_PID) == ([HistEntry("python3 412", 50), HistEntry("systemd-journal 189", 3)], 0)


def test_a_stack_key_is_its_frames_without_sizes_and_drops_are_counted() -> None:
    entries, dropped = parse_hist(STACKS)
    assert entries == [HistEntry("kprobe_dispatcher+0x3a;vfs_read+0x5;ksys_read+0x6b;do_syscall_64+0x58", 5)]
    assert dropped == 2


def test_plain_keys_are_their_values() -> None:
    text = "{ cpu:          1 } hitcount:          7\n{ comm: cat                                } hitcount: 2\n"
    assert parse_hist(text)[0] == [HistEntry("1", 7), HistEntry("cat", 2)]


def test_a_trigger_is_removed_by_its_own_command() -> None:
    assert removal(trigger("cpu")) == "!hist:keys=cpu:vals=hitcount:sort=hitcount.descending:size=8192"


def test_interval_counts_are_differences() -> None:
    before = [Count("vfs_read", "cat 1", 3), Count("vfs_write", None, 4)]
    now = [Count("vfs_read", "cat 1", 5), Count("vfs_read", "sh 2", 1), Count("vfs_write", None, 4)]
    assert since(now, before) == [Count("vfs_read", "cat 1", 2), Count("vfs_read", "sh 2", 1), Count("vfs_write", None, 0)]


def test_event_names_of_compiler_clones() -> None:
    assert event_name("foo.isra.0") == "foo_isra_0"
