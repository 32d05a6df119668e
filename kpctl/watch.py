"""Reading hits as they come: trace_pipe into a HitStream until told to stop."""
from __future__ import annotations

import os
import select
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from kpctl.hits import HitStream
from kpctl.tracefs import open_file

# How long one poll() may block, so that --duration ends on time even with no hits.
_POLL_MS = 250


class StopRequested(Exception):
    """SIGTERM arrived: stop like Ctrl-C does, so cleanup runs."""


@contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into StopRequested for the duration of the block."""
    def handler(signum: int, frame: FrameType | None) -> None:
        raise StopRequested()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def signals_ignored() -> Iterator[None]:
    """Let cleanup finish: a second Ctrl-C or SIGTERM must not leave a probe behind."""
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def pump(pipe: Path, stream: HitStream, duration: float | None = None) -> None:
    """Feed whole lines of trace_pipe to stream until it has its --count of hits or
    duration seconds pass; KeyboardInterrupt and StopRequested propagate to the caller.

    trace_pipe is opened non-blocking and polled: a blocking read() would sleep through
    the deadline. A read can end mid-line (tracing_read_pipe() copies what fits), so the
    tail after the last newline waits for the next read.
    """
    deadline = None if duration is None else time.monotonic() + duration
    with open_file(pipe, os.O_RDONLY | os.O_NONBLOCK) as file:
        fd = file.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        partial = b""
        while not stream.done:
            timeout = _POLL_MS
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                timeout = min(timeout, int(left * 1000) + 1)
            poller.poll(timeout)
            try:
                data = os.read(fd, 1 << 16)
            except BlockingIOError:
                continue
            if not data:
                break  # end of file: trace_pipe never ends, but a FIFO or a file does
            data = partial + data
            cut = data.rfind(b"\n") + 1
            partial = data[cut:]
            if cut:
                stream.feed(data[:cut].decode(errors="backslashreplace"))
                stream.flush()
