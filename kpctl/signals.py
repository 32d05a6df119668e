"""Ctrl-C and SIGTERM around kpctl's changes to the kernel: SIGTERM stops like Ctrl-C,
and cleanup runs to its end whatever arrives meanwhile."""
from __future__ import annotations

import signal
from collections.abc import Iterator
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
