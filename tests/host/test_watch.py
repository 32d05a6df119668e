"""watch's reading loop against a FIFO standing in for trace_pipe."""
from __future__ import annotations

import io
import os
import threading
import time
from pathlib import Path

from kpctl.hits import HitStream
from kpctl.watch import ProcessThreads, TracePipeSource, pump

LINE = "cat-154 [000] ..... 6.381650: retsfx: (ksys_read+0x6b/0xf0 <- vfs_read) ret=0x340\n"


def write_later(fifo: Path, pieces: list[str]) -> threading.Thread:
    def writer() -> None:
        fd = os.open(fifo, os.O_WRONLY)
        for piece in pieces:
            os.write(fd, piece.encode())
            time.sleep(0.05)
        time.sleep(0.3)
        os.close(fd)
    thread = threading.Thread(target=writer)
    thread.start()
    return thread


def test_a_line_split_across_reads_is_one_hit(tmp_path: Path) -> None:
    fifo = tmp_path / "trace_pipe"
    os.mkfifo(fifo)
    writer = write_later(fifo, [LINE[:30], LINE[30:] + LINE])
    stream = HitStream(io.StringIO())
    with TracePipeSource(fifo) as source:
        pump([source], stream, duration=1.0)
    writer.join()
    assert stream.counts.hits == 2 and stream.counts.unparsed == 0


def test_count_ends_the_watch_before_the_duration(tmp_path: Path) -> None:
    fifo = tmp_path / "trace_pipe"
    os.mkfifo(fifo)
    writer = write_later(fifo, [LINE * 3])
    stream = HitStream(io.StringIO(), count=2)
    started = time.monotonic()
    with TracePipeSource(fifo) as source:
        pump([source], stream, duration=5.0)
    writer.join()
    assert stream.counts.hits == 2 and time.monotonic() - started < 2


def test_duration_ends_a_watch_without_hits(tmp_path: Path) -> None:
    fifo = tmp_path / "trace_pipe"
    os.mkfifo(fifo)
    keep_open = os.open(fifo, os.O_RDWR)  # a writer that never writes
    started = time.monotonic()
    with TracePipeSource(fifo) as source:
        pump([source], HitStream(io.StringIO()), duration=0.3)
    os.close(keep_open)
    assert 0.3 <= time.monotonic() - started < 1.5


def test_a_process_is_all_its_threads(tmp_path: Path) -> None:
    for tid in ("40", "41"):
        (tmp_path / "40" / "task" / tid).mkdir(parents=True)
    threads = ProcessThreads(40, proc=tmp_path)
    assert "40" in threads and "41" in threads and "42" not in threads
    (tmp_path / "40" / "task" / "42").mkdir()
    assert "42" not in threads  # asked once: a tid's answer stays
