"""A tqdm progress bar (frames, fps, ETA) shown only on a terminal and never with ``-q``."""
from __future__ import annotations

import sys
from typing import IO

from tqdm import tqdm


def progress_wanted(quiet: bool, stream: IO[str] | None = None) -> bool:
    """Show a bar only when stderr is a terminal and the user did not ask for quiet."""
    stream = stream if stream is not None else sys.stderr
    try:
        return not quiet and stream.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    """Frames done out of ``total`` (when known), updated from the main thread."""

    def __init__(self, total: int | None, desc: str, enabled: bool) -> None:
        self.enabled = enabled
        self._done = 0
        self._bar = tqdm(total=total, desc=desc, unit="frame", dynamic_ncols=True, smoothing=0.1,
                         file=sys.stderr, disable=not enabled, leave=True) if enabled else None

    def update(self, frames_done: int) -> None:
        if self._bar is not None and frames_done > self._done:
            self._bar.update(frames_done - self._done)
            self._done = frames_done

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
