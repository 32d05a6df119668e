"""kpctl_kmod's trace events, as captured from the real module (data/kmod/*/trace.txt),
go through the same hit parser as kprobe_events hits: that is what lets `kpctl watch`
show both backends' hits."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from kpctl.hits import HitParser

CAPTURES = sorted((Path(__file__).parent / "data" / "kmod").glob("*-*"))


@pytest.mark.parametrize("capture", CAPTURES, ids=[c.name for c in CAPTURES])
def test_module_hits_parse_like_kprobe_hits(capture: Path) -> None:
    meta = json.loads((capture / "meta.json").read_text())
    symbol = meta["exchanges"][0]["args"]["symbol"]
    hits = list(HitParser().hits((capture / "trace.txt").read_text()))
    entries = [h for h in hits if h.event == "kprobe_hit"]
    returns = [h for h in hits if h.event == "kretprobe_hit"]
    assert len(entries) == len(returns) == meta["calls"] == len(hits) / 2
    for hit in entries:
        assert not hit.is_return and hit.where.startswith(f"{symbol}+0x")
        assert hit.args["name"] == "cap_entry"
    for hit in returns:
        assert hit.is_return and hit.function == symbol
        args = hit.args
        assert (args["name"], args["ret"]) == ("cap_ret", 99)
        assert isinstance(args["latency_ns"], int) and args["latency_ns"] > 0
