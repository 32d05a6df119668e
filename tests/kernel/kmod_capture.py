"""Capture real kpctl_kmod netlink traffic for the host tests. Run as root in a guest, at
the checkout's root:

    python3 guest/harness.py run --arch x86_64 --kernel 6.1 -- python3 tests/kernel/kmod_capture.py

Writes tests/host/data/kmod/<arch>-<kernel>/: for each exchange NAME.request (the bytes
sent) and NAME.reply (every reply message, as received), meta.json describing them, and
trace.txt, the module's trace events of the workload run in between. The module is
built and loaded if needed; the probes made here are removed at the end.
"""
from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

from kmod_fixtures import (
    NLM_F_ACK,
    NLM_F_DUMP,
    NLM_F_REQUEST,
    TRACEFS,
    WORKLOAD_SYSCALL,
    RawGenl,
    ensure_loaded,
    run_workload,
    syscall_symbol,
)

from kpctl.kmod.client import KmodClient
from kpctl.kmod.messages import Cmd, Kind, KpctlMsg, add_request, id_request, request

CALLS = 5


def main() -> int:
    ensure_loaded()
    arch = {"aarch64": "arm64"}.get(platform.machine(), platform.machine())
    kernel = ".".join(platform.release().split(".")[:2])
    out = Path(__file__).resolve().parents[1] / "host" / "data" / "kmod" / f"{arch}-{kernel}"
    out.mkdir(parents=True, exist_ok=True)
    with KmodClient() as client:
        family = client.family_id
    symbol = syscall_symbol(WORKLOAD_SYSCALL)
    sock = RawGenl()
    exchanges: list[dict[str, object]] = []

    def exchange(name: str, builder: str, args: dict[str, object], msg: KpctlMsg, dump: bool = False) -> list[bytes]:
        seq = len(exchanges) + 1
        flags = NLM_F_REQUEST | (NLM_F_DUMP if dump else NLM_F_ACK)
        msg["header"] = {"type": family, "flags": flags, "sequence_number": seq, "pid": 0}
        msg.encode()
        replies = sock.exchange(bytes(msg.data))
        (out / f"{name}.request").write_bytes(msg.data)
        (out / f"{name}.reply").write_bytes(b"".join(replies))
        exchanges.append({"name": name, "builder": builder, "args": args, "seq": seq, "flags": flags})
        return replies

    entry = {"symbol": symbol, "name": "cap_entry"}
    ret = {"symbol": symbol, "name": "cap_ret", "kind": int(Kind.RETURN), "maxactive": 16}
    exchange("add_entry", "add", entry, add_request(**entry))
    exchange("add_return", "add", ret, add_request(**{**ret, "kind": Kind.RETURN}))
    instance = TRACEFS / "instances" / "kpctl_kmod_capture"
    instance.mkdir()
    (instance / "events" / "kpctl_kmod" / "enable").write_text("1")
    run_workload(CALLS)
    (out / "trace.txt").write_text((instance / "trace").read_text())
    instance.rmdir()
    with KmodClient() as client:
        ids = {p.name: p.id for p in client.dump()}
    exchange("get_entry", "id", {"cmd": int(Cmd.GET), "probe_id": ids["cap_entry"]},
             id_request(Cmd.GET, ids["cap_entry"]))
    exchange("dump", "request", {"cmd": int(Cmd.GET)}, request(Cmd.GET), dump=True)
    exchange("disable_entry", "id", {"cmd": int(Cmd.DISABLE), "probe_id": ids["cap_entry"]},
             id_request(Cmd.DISABLE, ids["cap_entry"]))
    bad = {"symbol": "kpctl_no_such_function", "name": "cap_bad"}
    exchange("add_unknown_symbol", "add", bad, add_request(**bad))
    exchange("add_duplicate", "add", entry, add_request(**entry))
    exchange("get_unknown_id", "id", {"cmd": int(Cmd.GET), "probe_id": 99999}, id_request(Cmd.GET, 99999))
    with KmodClient() as client:
        for probe_id in ids.values():
            client.remove(probe_id)
    meta = {"family": family, "release": platform.release(), "arch": arch, "calls": CALLS,
            "exchanges": exchanges}
    (out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"captured {len(exchanges)} exchanges into {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
