"""Ctrl-C and SIGTERM around kpctl's changes to the kernel: SIGTERM stops like Ctrl-C,
and cleanup runs to its end whatever arrives meanwhile."""
from __future__ import annotations

import os
import select
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType


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


@contextmanager
def signals_held() -> Iterator[None]:
    """Let a removal finish, then stop: a Ctrl-C or SIGTERM that arrives meanwhile takes
    effect once the block is done (ignored, it was lost: a bench went on to its end)."""
    arrived: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        arrived.append(signum)

    previous = {signum: signal.signal(signum, hold) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if arrived:
            signal.raise_signal(arrived[0])


@contextmanager
def interruptible_sleep() -> Iterator[Callable[[float], None]]:
    """A sleep that a signal always ends. time.sleep() misses a signal that lands after
    Python last checked for one and before the sleep began: its handler then runs only
    when the sleep ends (an hour later for a counting command). The signal's wakeup fd
    is written by the C handler whenever it lands, so select() sees it either way."""
    read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    previous = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)

    def sleep(seconds: float) -> None:
        if select.select([read_end], [], [], seconds)[0]:
            os.read(read_end, 512)  # the handler itself runs once this returns to Python

    try:
        yield sleep
    finally:
        signal.set_wakeup_fd(previous)
        os.close(read_end)
        os.close(write_end)
