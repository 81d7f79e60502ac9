"""Just-in-time frames for live mode: take a frame from the camera only when the network is
ready for it.

The runner's stages are joined by queues; a frame taken from the camera while the network is
still busy with the previous one waits a whole inference in that queue, and comes out one
inference older than it had to. :class:`Pacer` wraps the engine and knows when the engine
asks for its next batch; :meth:`LiveSource.items <pipeline.live.source.LiveSource.items>`
waits for that moment (:meth:`Pacer.wait_turn`) before it picks the freshest frame. At most
``batch`` frames are handed out ahead of the engine, so batching still works. Engines that
pipeline batches (CUDA double buffering) ask for the next batch early, and get it early.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Iterable, Iterator, TypeVar

import numpy as np

T = TypeVar("T")

__all__ = ["Pacer"]


class Pacer:
    """An engine wrapper (every other attribute is the wrapped engine's)."""

    def __init__(self, engine: Any, batch: int = 1) -> None:
        self.engine = engine
        self.batch = max(1, batch)
        self._cond = threading.Condition()
        self._wants = False
        self.handed = 0     # frames handed to the pipeline
        self.consumed = 0   # frames the engine has taken in batches

    def __getattr__(self, name: str) -> Any:
        if name == "engine":
            raise AttributeError(name)
        return getattr(self.engine, name)

    def stream(self, items: Iterable[tuple[np.ndarray, T]]) -> Iterator[tuple[np.ndarray, T]]:
        it = iter(items)

        def pulled() -> Iterator[tuple[np.ndarray, T]]:
            while True:
                with self._cond:
                    self._wants = True
                    self._cond.notify_all()
                try:
                    item = next(it)
                except StopIteration:
                    return
                finally:
                    with self._cond:
                        self._wants = False
                with self._cond:
                    self.consumed += len(item[0])
                    self._cond.notify_all()
                yield item

        yield from self.engine.stream(pulled())

    def handed_frame(self) -> None:
        with self._cond:
            self.handed += 1

    def wait_turn(self, stop: Callable[[], bool], poll: float = 0.05) -> None:
        """Block until the engine waits for input and fewer than ``batch`` frames are on their
        way to it (or ``stop()``)."""
        with self._cond:
            while not (self._wants and self.handed - self.consumed < self.batch):
                if stop():
                    return
                self._cond.wait(poll)
