"""Exponential backoff between reconnection attempts, with a cap and a little jitter.

The n-th consecutive failed attempt waits ``initial * factor**(n-1)`` seconds, at most
``cap``; ±``jitter`` (a fraction) spreads out many cameras that lost the same switch, so
they do not all knock on their servers at the same instant. :meth:`Backoff.reset` after a
connection that delivered frames starts the sequence again.
"""
from __future__ import annotations

import random

__all__ = ["Backoff"]


class Backoff:
    def __init__(self, initial: float = 0.5, cap: float = 10.0, factor: float = 2.0,
                 jitter: float = 0.1, rng: random.Random | None = None) -> None:
        if initial <= 0 or cap <= 0 or factor < 1 or not 0 <= jitter < 1:
            raise ValueError("backoff needs initial > 0, cap > 0, factor >= 1 and 0 <= jitter < 1")
        self.initial = initial
        self.cap = max(cap, initial)
        self.factor = factor
        self.jitter = jitter
        self.attempts = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        """The wait before the next attempt (and count the attempt)."""
        self.attempts += 1
        base = min(self.cap, self.initial * self.factor ** (self.attempts - 1))
        if self.jitter:
            base *= 1 + self._rng.uniform(-self.jitter, self.jitter)
        return min(base, self.cap)

    def reset(self) -> None:
        self.attempts = 0
