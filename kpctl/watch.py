"""Reading hits as they come: one loop polls every source of hits (a tracefs instance's
trace_pipe, and any a backend opens of its own) into a sink until told to stop."""
from __future__ import annotations

import os
import select
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from kpctl.tracefs import open_file

# How long one poll() may block, so that --duration ends on time even with no hits.
_POLL_MS = 250


class HitSink(Protocol):
    """What takes hits: HitStream for watch, a search for one hit in inspect."""

    @property
    def done(self) -> bool: ...

    def feed(self, text: str) -> None:
        """Whole lines of trace text."""
        ...

    def flush(self) -> None: ...


class HitSource(Protocol):
    """A descriptor poll() waits on, and the decoding of what it delivers."""

    def fileno(self) -> int: ...

    def read_into(self, sink: HitSink) -> bool:
        """Hand what is ready to sink; False once the source has ended."""
        ...


class ProcessThreads:
    """The thread ids of one process, as a container of trace_pipe's thread id text:
    --pid means a process, all its threads, as in perf and bpftrace. Whether a thread is
    the process's is asked of /proc (PID/task/TID) once, at its first hit."""

    def __init__(self, pid: int, proc: Path = Path("/proc")) -> None:
        self.pid = pid
        self._proc = proc
        self._known: dict[str, bool] = {str(pid): True}

    def __contains__(self, tid: object) -> bool:
        if not isinstance(tid, str):
            return False
        known = self._known.get(tid)
        if known is None:
            known = self._known[tid] = (self._proc / str(self.pid) / "task" / tid).exists()
        return known


class TracePipeSource:
    """trace_pipe of a tracefs instance, opened non-blocking (a blocking read() would
    sleep through a deadline). A read can end mid-line (tracing_read_pipe() copies what
    fits), so the tail after the last newline waits for the next read."""

    def __init__(self, pipe: Path) -> None:
        self._file = open_file(pipe, os.O_RDONLY | os.O_NONBLOCK)
        self._partial = b""

    def fileno(self) -> int:
        return self._file.fileno()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> TracePipeSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read_into(self, sink: HitSink) -> bool:
        try:
            data = os.read(self._file.fileno(), 1 << 16)
        except BlockingIOError:
            return True
        if not data:
            return False  # end of file: trace_pipe never ends, but a FIFO or a file does
        data = self._partial + data
        cut = data.rfind(b"\n") + 1
        self._partial = data[cut:]
        if cut:
            sink.feed(data[:cut].decode(errors="backslashreplace"))
            sink.flush()
        return True


def pump(
    sources: Sequence[HitSource], sink: HitSink, duration: float | None = None,
    each_round: Callable[[], bool] | None = None,
) -> None:
    """Feed sink from sources until it is done, every source has ended, duration
    seconds pass, or each_round (run before every poll) returns False. KeyboardInterrupt
    and StopRequested propagate to the caller."""
    deadline = None if duration is None else time.monotonic() + duration
    live = {source.fileno(): source for source in sources}
    poller = select.poll()
    for fd in live:
        poller.register(fd, select.POLLIN)
    while live and not sink.done:
        timeout = _POLL_MS
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            timeout = min(timeout, int(left * 1000) + 1)
        if each_round is not None and not each_round():
            break
        poller.poll(timeout)
        # Every source is read after each poll, ready or not: a non-blocking read of an
        # idle one costs a system call, and a timeout needs no special case.
        for fd, source in list(live.items()):
            if not source.read_into(sink):
                poller.unregister(fd)
                del live[fd]
