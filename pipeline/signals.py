"""Cancellation: a token every stage polls, and SIGINT/SIGTERM handlers that set it.

The first Ctrl-C (or SIGTERM) asks the run to stop: stages stop taking work, the output is
deleted (or, with ``--keep-partial``, finalised) and the CLI exits 130 (143 for SIGTERM).
A second Ctrl-C stops waiting for the stages (cleanup of the temporary file still runs).
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator


class CancelToken:
    """A thread-safe "please stop" flag with the reason and the signal that caused it."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""
        self.signum: int | None = None

    def cancel(self, reason: str = "cancelled", signum: int | None = None) -> None:
        if not self._event.is_set():
            self.reason, self.signum = reason, signum
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._event.wait(timeout)


_NAMES = {signal.SIGINT: "interrupted (Ctrl-C)", signal.SIGTERM: "terminated (SIGTERM)"}


@contextlib.contextmanager
def handle_signals(token: CancelToken) -> Iterator[CancelToken]:
    """Within the block, SIGINT/SIGTERM cancel ``token``; a second one raises
    ``KeyboardInterrupt`` in the main thread. Previous handlers are restored afterwards.
    Outside the main thread this does nothing (signals can only be handled there)."""
    if threading.current_thread() is not threading.main_thread():
        yield token
        return
    hits = {"count": 0}

    def handler(signum: int, frame: object) -> None:
        hits["count"] += 1
        token.cancel(_NAMES.get(signum, f"signal {signum}"), signum)
        if hits["count"] > 1:
            raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield token
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
