"""Hist files as the kernel prints them (Documentation/trace/histogram.rst), parsed."""
from __future__ import annotations

from kpctl.aggregation.counts import Count, folded, log2_buckets, render_log2, since
from kpctl.aggregation.hist_triggers import event_name
from kpctl.histograms import HistEntry, parse_hist, trigger

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


def test_a_trigger_counts_hits_by_its_key_biggest_first() -> None:
    assert trigger("cpu") == "hist:keys=cpu:vals=hitcount:sort=hitcount.descending:size=8192"


def test_interval_counts_are_differences() -> None:
    before = [Count("vfs_read", "cat 1", 3), Count("vfs_write", None, 4)]
    now = [Count("vfs_read", "cat 1", 5), Count("vfs_read", "sh 2", 1), Count("vfs_write", None, 4)]
    assert since(now, before) == [Count("vfs_read", "cat 1", 2), Count("vfs_read", "sh 2", 1), Count("vfs_write", None, 0)]


def test_event_names_of_compiler_clones() -> None:
    assert event_name("foo.isra.0") == "foo_isra_0"


def test_log2_buckets_span_the_range_with_empty_ones_between() -> None:
    counts = [Count("vfs_read", "~ 2^12", 5), Count("vfs_read", "~ 2^10", 2), Count("vfs_read", "~ 2^0", 1)]
    buckets = log2_buckets(counts)
    assert buckets[0] == (0, 1, 1) and buckets[10] == (513, 1024, 2) and buckets[12] == (2049, 4096, 5)
    assert len(buckets) == 13 and buckets[11] == (1025, 2048, 0)


def test_a_histogram_renders_as_bcc_does() -> None:
    lines = render_log2([(513, 1024, 2), (1025, 2048, 0), (2049, 4096, 4)], "size", width=4)
    assert lines == [
        "        size : hits     distribution",
        " 513 -> 1024 : 2        |**  |",
        "1025 -> 2048 : 0        |    |",
        "2049 -> 4096 : 4        |****|",
    ]


def test_folded_stacks_go_root_first() -> None:
    assert folded([Count("vfs_read", "vfs_read+0x5;ksys_read+0x6b;do_syscall_64+0x58", 3)]) == [
        "do_syscall_64+0x58;ksys_read+0x6b;vfs_read+0x5 3"]


def test_a_stack_key_is_recognised_by_its_newer_name_too() -> None:
    text = STACKS.replace("{ stacktrace:", "{ common_stacktrace:")
    assert parse_hist(text)[0][0].key.startswith("kprobe_dispatcher+0x3a;vfs_read+0x5")


def test_counts_and_histograms_parse_as_prometheus_metrics() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from kpctl.aggregation.counts import count_metric, histogram_metric
    from kpctl.metrics import exposition

    text = exposition([
        count_metric([Count("vfs_read", "cat 12", 5)], "pid", "tracefs"),
        histogram_metric([(0, 1, 2), (2, 2, 0), (3, 4, 3)], "vfs_read", "size=$arg3:u64", "bpf"),
    ])
    families = {f.name: f for f in text_string_to_metric_families(text)}
    [hits] = families["kpctl_count_hits"].samples
    assert hits.labels == {"function": "vfs_read", "by": "pid", "key": "cat 12", "engine": "tracefs"} and hits.value == 5
    hist = families["kpctl_hist"]
    assert hist.type == "histogram"
    buckets = [(s.labels["le"], s.value) for s in hist.samples if s.name == "kpctl_hist_bucket"]
    assert buckets == [("1", 2), ("2", 2), ("4", 5), ("+Inf", 5)]
    assert [s.value for s in hist.samples if s.name == "kpctl_hist_count"] == [5]


def test_latency_and_stacks_parse_as_prometheus_metrics() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from kpctl.aggregation.counts import latency_metric, stacks_metric
    from kpctl.metrics import exposition

    text = exposition([
        latency_metric({"vfs_read": [(513, 1024, 3)], "vfs_write": [(0, 1, 1), (2, 2, 2)]}, "nsecs", "bpf"),
        stacks_metric([Count("vfs_read", "vfs_read+0x5;ksys_read+0x6b", 4)], "vfs_read", "tracefs"),
    ])
    families = {f.name: f for f in text_string_to_metric_families(text)}
    latency = families["kpctl_latency"]
    assert latency.type == "histogram"
    assert [(s.labels["function"], s.labels["le"], s.value) for s in latency.samples if s.name == "kpctl_latency_bucket"] == [
        ("vfs_read", "1024", 3), ("vfs_read", "+Inf", 3), ("vfs_write", "1", 1), ("vfs_write", "2", 3), ("vfs_write", "+Inf", 3)]
    [stack] = families["kpctl_stack_hits"].samples
    assert stack.labels == {"target": "vfs_read", "stack": "ksys_read+0x6b;vfs_read+0x5", "engine": "tracefs"}
    assert stack.value == 4
