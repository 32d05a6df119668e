"""kpctl_kmod's message classes against the module itself: its ABI header, and netlink
traffic captured from the real module in guests (data/kmod/<arch>-<kernel>/, made by
tests/kernel/kmod_capture.py)."""
from __future__ import annotations

import errno
import json
import re
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pyroute2.netlink import nlmsgerr

from kpctl.kmod.messages import (
    Cmd,
    Kind,
    KmodProbe,
    KpctlMsg,
    KprobeFlag,
    add_request,
    id_request,
    probe_from_msg,
    request,
)

ROOT = Path(__file__).resolve().parents[2]
CAPTURES = sorted((Path(__file__).parent / "data" / "kmod").glob("*-*"))
NLMSG_ERROR = 2

BUILDERS: dict[str, Callable[..., KpctlMsg]] = {
    "add": lambda kind=0, **args: add_request(kind=Kind(kind), **args),
    "id": lambda cmd, probe_id: id_request(Cmd(cmd), probe_id),
    "request": lambda cmd: request(Cmd(cmd)),
}


def c_enum(name: str) -> list[str]:
    """The members of an enum of kmod/kpctl_kmod.h, in order."""
    header = (ROOT / "kmod" / "kpctl_kmod.h").read_text()
    body = re.search(rf"enum {name} {{(.*?)}};", header, re.S)
    assert body, name
    return re.findall(r"^\t(\w+),", body.group(1), re.M)


def test_attributes_match_the_module() -> None:
    assert [name for name, _ in KpctlMsg.nla_map] == c_enum("kpctl_attr")[:-1]  # without __KPCTL_A_MAX


def test_commands_and_kinds_match_the_module() -> None:
    assert [f"KPCTL_CMD_{c.name}" for c in Cmd] == c_enum("kpctl_cmd")[1:-1]
    assert [f"KPCTL_KIND_{k.name}" for k in Kind] == c_enum("kpctl_kind")


def test_limits_match_the_module() -> None:
    from kpctl.kmod import messages

    header = (ROOT / "kmod" / "kpctl_kmod.h").read_text()
    defines = dict(re.findall(r"^#define (KPCTL_\w+)\s+(\S+)", header, re.M))
    assert (int(defines["KPCTL_NAME_MAX"]), int(defines["KPCTL_MAXACTIVE_MAX"]), int(defines["KPCTL_BENCH_MAX"]),
            int(defines["KPCTL_BENCH_DEPTH_MAX"]), int(defines["KPCTL_BENCH_SECONDS_MAX"])) == (
        messages.NAME_MAX, messages.MAXACTIVE_MAX, messages.BENCH_MAX, messages.BENCH_DEPTH_MAX, messages.BENCH_SECONDS_MAX)
    assert int(defines["KPCTL_FLAG_STUCK"], 16) == messages.KprobeFlag.STUCK
    assert defines["KPCTL_BENCH_TARGET"] == f'"{messages.BENCH_TARGET}"'
    assert defines["KPCTL_BENCH_RECURSIVE"] == f'"{messages.BENCH_RECURSIVE}"'


def split(data: bytes) -> list[bytes]:
    messages, offset = [], 0
    while offset < len(data):
        (length,) = struct.unpack_from("=I", data, offset)
        messages.append(data[offset : offset + length])
        offset += (length + 3) & ~3
    return messages


def load(capture: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    meta = json.loads((capture / "meta.json").read_text())
    return meta, {e["name"]: e for e in meta["exchanges"]}


def probes(capture: Path, name: str) -> list[KmodProbe]:
    meta, _ = load(capture)
    found = []
    for raw in split((capture / f"{name}.reply").read_bytes()):
        if struct.unpack_from("=H", raw, 4)[0] == meta["family"]:
            msg = KpctlMsg(raw)
            msg.decode()
            found.append(probe_from_msg(msg))
    return found


def error(capture: Path, name: str) -> tuple[int, str | None]:
    (last,) = split((capture / f"{name}.reply").read_bytes())[-1:]
    assert struct.unpack_from("=H", last, 4)[0] == NLMSG_ERROR
    msg = nlmsgerr(last)
    msg.decode()
    return -msg["error"], msg.get_attr("NLMSGERR_ATTR_MSG")


@pytest.fixture(params=CAPTURES, ids=[c.name for c in CAPTURES])
def capture(request: pytest.FixtureRequest) -> Path:
    return request.param


def test_captures_exist() -> None:
    assert CAPTURES, "no captured kpctl_kmod traffic: run tests/kernel/kmod_capture.py in a guest"


def test_requests_encode_to_the_captured_bytes(capture: Path) -> None:
    meta, exchanges = load(capture)
    for name, exchange in exchanges.items():
        msg = BUILDERS[exchange["builder"]](**exchange["args"])
        msg["header"] = {"type": meta["family"], "flags": exchange["flags"],
                         "sequence_number": exchange["seq"], "pid": 0}
        msg.encode()
        assert bytes(msg.data) == (capture / f"{name}.request").read_bytes(), name


def test_add_replies(capture: Path) -> None:
    meta, _ = load(capture)
    (entry,) = probes(capture, "add_entry")
    (ret,) = probes(capture, "add_return")
    assert (entry.name, entry.kind, entry.offset, entry.enabled, entry.hits) == ("cap_entry", Kind.ENTRY, 0, True, 0)
    # No post_handler on x86's ftrace site at a function's entry (kmod/kpctl_probes.c).
    post_hits = None if meta["arch"] == "x86_64" else 0
    assert (entry.post_hits, entry.maxactive, entry.ret_hits) == (post_hits, None, None)
    assert entry.symbol.endswith("_sys_sched_get_priority_max") and entry.address > 0
    assert (ret.name, ret.kind, ret.maxactive, ret.ret_hits, ret.ret_nmissed) == ("cap_ret", Kind.RETURN, 16, 0, 0)
    assert ret.post_hits is None and ret.target == f"{ret.symbol}%return"
    assert ret.id > entry.id and ret.address == entry.address
    assert error(capture, "add_entry") == (0, None)  # the ack after the reply


def test_get_and_dump_show_the_workload(capture: Path) -> None:
    meta, _ = load(capture)
    calls = meta["calls"]
    (entry,) = probes(capture, "get_entry")
    post_hits = None if meta["arch"] == "x86_64" else calls
    assert (entry.name, entry.hits, entry.post_hits, entry.missed) == ("cap_entry", calls, post_hits, 0)
    dumped = probes(capture, "dump")
    assert [p.name for p in dumped] == ["cap_entry", "cap_ret"]
    assert (dumped[1].hits, dumped[1].ret_hits) == (calls, calls)
    assert KprobeFlag.DISABLED not in dumped[0].flags
    if meta["arch"] == "x86_64":
        assert KprobeFlag.FTRACE in entry.flags


def test_errors_carry_the_modules_message(capture: Path) -> None:
    assert error(capture, "disable_entry") == (0, None)
    assert error(capture, "add_unknown_symbol") == (
        errno.ENOENT, "symbol not in kallsyms (unknown, inlined or renamed)")
    assert error(capture, "add_duplicate") == (errno.EEXIST, "a probe with this name exists")
    assert error(capture, "get_unknown_id") == (errno.ENOENT, "no probe with this id")


def test_decoded_replies_encode_back_to_the_same_bytes(capture: Path) -> None:
    meta, _ = load(capture)
    for raw in split((capture / "dump.reply").read_bytes()):
        if struct.unpack_from("=H", raw, 4)[0] != meta["family"]:
            continue
        msg = KpctlMsg(raw)
        msg.decode()
        again = KpctlMsg()
        again["header"] = dict(msg["header"])
        for field in ("cmd", "version", "reserved"):
            again[field] = msg[field]
        again["attrs"] = [(name, value) for name, value in msg["attrs"]]
        again.encode()
        assert bytes(again.data) == raw
