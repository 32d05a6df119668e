"""kpctl_kmod's trace events, as captured from the real module (data/kmod/*/trace.txt),
go through the same hit parser as kprobe_events hits: that is what lets `kpctl watch`
show both backends' hits, with the kmod backend's namers."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from kpctl.backends.kmod import PROBE_NAMERS
from kpctl.hits import HitParser

CAPTURES = sorted((Path(__file__).parent / "data" / "kmod").glob("*-*"))


@pytest.mark.parametrize("capture", CAPTURES, ids=[c.name for c in CAPTURES])
def test_module_hits_parse_like_kprobe_hits(capture: Path) -> None:
    meta = json.loads((capture / "meta.json").read_text())
    symbol = meta["exchanges"][0]["args"]["symbol"]
    hits = list(HitParser(namers=PROBE_NAMERS).hits((capture / "trace.txt").read_text()))
    entries = [h for h in hits if h.event == "cap_entry"]
    returns = [h for h in hits if h.event == "cap_ret"]
    assert len(entries) == len(returns) == meta["calls"] == len(hits) / 2
    for hit in entries:
        assert not hit.is_return and hit.where.startswith(f"{symbol}+0x")
        assert set(hit.args) == {"id"}
    for hit in returns:
        assert hit.is_return and hit.function == symbol
        args = hit.args
        assert args["ret"] == 99 and "name" not in args
        assert isinstance(args["latency_ns"], int) and args["latency_ns"] > 0


def test_watch_shows_module_hits_under_their_probe_name() -> None:
    import io

    from kpctl.hits import HitStream

    text = (CAPTURES[0] / "trace.txt").read_text()
    out = io.StringIO()
    stream = HitStream(out, events=["cap_ret"], namers=PROBE_NAMERS)
    stream.feed(text)
    lines = out.getvalue().splitlines()
    assert lines and all(" cap_ret " in line and " name=" not in line for line in lines)
    assert stream.counts.hits == len(lines)
