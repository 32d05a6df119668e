"""`kpctl apply -f`: probe-set files parsed with errors that name line and field, and
applied against the fake tracefs of test_cli: idempotent, pruning only the set's own,
all or nothing. The real kernel's side is in tests/kernel/test_apply.py."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cli import FakeTracefs, fake, run

from kpctl.errors import UsageError
from kpctl.probeset import parse_probe_set

SET = """\
name: reads
owner: storage
probes:
  - target: vfs_read
    args: ['size=$arg3:u64']
    filter: 'size > 4096'
  - target: vfs_write
    enabled: false
"""


@pytest.fixture
def records(fake: FakeTracefs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from kpctl import owners as owners_module

    monkeypatch.setattr(owners_module.Owners.__init__, "__defaults__", (tmp_path / "owners", fake.proc))
    fake.commands = []
    return tmp_path / "owners"


def apply(tmp_path: Path, text: str, *options: str) -> tuple[int, str]:
    (tmp_path / "set.yaml").write_text(text)
    return run("apply", "-f", str(tmp_path / "set.yaml"), *options)


def test_a_set_is_added_once_and_a_second_apply_changes_nothing(fake: FakeTracefs, records: Path, tmp_path: Path) -> None:
    code, out = apply(tmp_path, SET)
    assert (code, out) == (0, "added kpctl/vfs_read\nadded kpctl/vfs_write\n")
    events = fake.read("kprobe_events")
    assert "p:kpctl/vfs_read vfs_read size=$arg3:u64\n" in events and "p:kpctl/vfs_write vfs_write\n" in events
    assert fake.read("instances/kpctl/events/kpctl/vfs_read/filter").strip() == "size > 4096"
    assert fake.read("instances/kpctl/events/kpctl/vfs_write/enable").strip() == "0"
    fake.commands = []
    code, out = apply(tmp_path, SET, "--json")
    assert code == 0 and fake.commands == []
    assert json.loads(out) == {"set": "reads", "changed": False, "added": [], "replaced": [], "removed": [],
                               "enabled": [], "disabled": [], "unchanged": ["vfs_read", "vfs_write"], "dry_run": False}
    owners = {r["name"]: r["owner"] for r in json.loads(run("list", "--json")[1])}
    assert owners["vfs_read"] == owners["vfs_write"] == "set reads (storage)" and owners["open"] == ""


def test_a_changed_probe_is_replaced_and_the_diff_shows_both(fake: FakeTracefs, records: Path, tmp_path: Path) -> None:
    apply(tmp_path, SET)
    code, out = apply(tmp_path, SET.replace("size=$arg3:u64", "n=$arg3:u32").replace("size >", "n >"), "--diff")
    assert code == 0
    assert out.splitlines() == [
        "-p:kpctl/vfs_read vfs_read size=$arg3:u64  [tracefs, filter: size > 4096]",
        "+p:kpctl/vfs_read vfs_read n=$arg3:u32  [tracefs, filter: n > 4096]",
        "replaced kpctl/vfs_read",
    ]
    assert "p:kpctl/vfs_read vfs_read n=$arg3:u32\n" in fake.read("kprobe_events")


def test_a_state_change_enables_without_replacing(fake: FakeTracefs, records: Path, tmp_path: Path) -> None:
    apply(tmp_path, SET)
    fake.commands = []
    code, out = apply(tmp_path, SET.replace("enabled: false", "enabled: true"))
    assert (code, out, fake.commands) == (0, "enabled kpctl/vfs_write\n", [])


def test_prune_removes_the_sets_probes_the_file_dropped_and_nothing_else(
    fake: FakeTracefs, records: Path, tmp_path: Path,
) -> None:
    apply(tmp_path, SET)
    smaller = SET[:SET.index("  - target: vfs_write")]
    assert apply(tmp_path, smaller) == (0, "set reads: no change (1 probe as the file says)\n")
    assert "kpctl/vfs_write" in fake.read("kprobe_events"), "without --prune, kept"
    code, out = apply(tmp_path, smaller, "--prune")
    assert (code, out) == (0, "removed kpctl/vfs_write\n")
    events = fake.read("kprobe_events")
    assert "kpctl/vfs_write" not in events and "kpctl/open " in events and "other/keep" in events
    assert sorted(p.name for p in (records / "kpctl").iterdir()) == ["vfs_read"]


def test_dry_run_says_what_would_change_and_changes_nothing(fake: FakeTracefs, records: Path, tmp_path: Path) -> None:
    before = fake.read("kprobe_events")
    code, out = apply(tmp_path, SET, "--dry-run")
    assert (code, out) == (0, "would be added kpctl/vfs_read\nwould be added kpctl/vfs_write\n")
    assert fake.read("kprobe_events") == before and fake.commands == [] and not records.exists()


def test_delete_removes_the_set(fake: FakeTracefs, records: Path, tmp_path: Path) -> None:
    apply(tmp_path, SET)
    code, out = apply(tmp_path, SET, "--delete", "--json")
    assert code == 0 and json.loads(out)["removed"] == ["vfs_read", "vfs_write"]
    assert fake.read("kprobe_events") == "p:kpctl/open do_sys_openat2 dfd=$arg1:s32 path=+0($arg2):ustring\n" \
        "r10:kpctl/open_ret do_sys_openat2 ret=$retval:s32\np:other/keep vfs_write\n"


def test_a_probe_the_set_does_not_own_is_never_taken(fake: FakeTracefs, records: Path, tmp_path: Path) -> None:
    code, out = apply(tmp_path, SET + "  - target: do_sys_openat2\n    name: open\n")
    assert code == 1
    assert out == ("Error: kpctl/open exists and is not set reads's (owner: none recorded)\n"
                   "remove it, or name the set's probe otherwise\n")
    assert fake.commands == []


def test_a_probe_the_kernel_refuses_undoes_the_ones_before_it(fake: FakeTracefs, records: Path, tmp_path: Path) -> None:
    before = fake.read("kprobe_events")
    fake.refuse = {"p:kpctl/vfs_write vfs_write"}
    code, out = apply(tmp_path, SET)
    assert code == 1 and "vfs_write" in out
    assert fake.read("kprobe_events") == before
    assert not list(records.glob("*/*"))


@pytest.mark.parametrize(("text", "message"), [
    ("name: reads\nprobes:\n  - target: vfs_read\n    kind: exit\n",
     "set.yaml:4: probes[0].kind: must be entry or return, not 'exit'"),
    ("name: reads\nprobes:\n  - target: vfs_read\n    args: ['size=$nope']\n",
     "set.yaml:4: probes[0].args[0]: unknown $-variable"),
    ("name: reads\nprobes:\n  - target: vfs_read\n    maxactive: 4\n",
     "set.yaml:3: probes[0]: maxactive applies to return probes only"),
    ("name: reads\nprobes:\n  - target: vfs_read\n  - target: vfs_read\n",
     "set.yaml:4: probes[1].name: vfs_read names two probes of the set"),
    ("name: reads\nprobes:\n  - targt: vfs_read\n",
     "set.yaml:3: probes[0].targt: unknown field (fields: args, backend, enabled, filter, kind, maxactive, name, target)"),
    ("name: reads\nprobes:\n  - name: x\n", "set.yaml:3: probes[0].target: missing"),
    ("name: 'a b'\nprobes: []\n", "set.yaml:1: name: 'a b' is not a set name ([A-Za-z0-9_.-]+)"),
    ("name: reads\nprobes: {}\n", "set.yaml:2: probes: must be a list of probes"),
    ("name: reads\nprobes:\n  - target: [vfs_read\n", "set.yaml:4: not valid YAML: "),
    ("- just a list\n", "set.yaml: a probe set is a mapping with name and probes"),
])
def test_a_bad_file_names_line_and_field(text: str, message: str) -> None:
    with pytest.raises(UsageError) as e:
        parse_probe_set(text, "set.yaml")
    assert str(e.value).startswith(message)


def test_a_bad_file_changes_nothing(fake: FakeTracefs, records: Path, tmp_path: Path) -> None:
    code, out = apply(tmp_path, SET + "  - target: vfs_read\n    name: second\n    backend: bpf\n")
    assert code == 2
    assert out.startswith("Error: ")
    assert "set.yaml:9: backend: bpf's probes die with kpctl: a set's need tracefs or kmod" in out
    assert fake.commands == []
