"""Safe output files: checks before the work starts, and atomic replacement when it ends.

The output is written to a hidden temporary file beside the target (``.NAME.XXXX.partial.EXT``:
same folder, so the final rename is atomic; same extension, so FFmpeg picks the same
muxer). On success the file is flushed to disk (fsync) and renamed over the target; on
failure or Ctrl-C it is deleted. The target therefore only ever holds a complete file, and
an existing target is only replaced by a complete one (and only with ``--overwrite``).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import UsageError

PARTIAL_MARK = ".partial"


def same_file(a: Path, b: Path) -> bool:
    """True when ``a`` and ``b`` name the same file (symlinks, hard links, ``..``)."""
    try:
        if a.resolve() == b.resolve():
            return True
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output(input_path: "Path | None", output: Path, overwrite: bool) -> None:
    """Refuse outputs that would lose data or cannot be written; raise with one line."""
    if input_path is not None and same_file(input_path, output):
        raise UsageError(f"output {output} is the input file; choose another output name")
    if output.is_dir():
        raise UsageError(f"output {output} is a folder; give a file name (a folder output needs a folder input)")
    if output.exists() and not overwrite:
        raise UsageError(f"output {output} already exists (pass --overwrite to replace it)")
    parent = output.parent if str(output.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"output folder does not exist: {parent}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"output folder is not writable: {parent}")
    if not output.suffix:
        raise UsageError(f"output {output} has no extension; add one (.mp4, .mkv, .mov) to choose the container")


class AtomicOutput:
    """A temporary file beside ``target`` that becomes ``target`` on :meth:`commit`."""

    def __init__(self, target: "str | os.PathLike[str]") -> None:
        self.target = Path(target)
        parent = self.target.parent if str(self.target.parent) else Path(".")
        fd, name = tempfile.mkstemp(prefix=f".{self.target.stem}.", suffix=f"{PARTIAL_MARK}{self.target.suffix}",
                                    dir=parent)
        os.close(fd)
        self.temp = Path(name)
        self.done = False
        # mkstemp makes 0600 files; the result should look like any other new file
        # (or keep the mode of the file it replaces).
        try:
            self._mode = self.target.stat().st_mode & 0o7777
        except OSError:
            umask = os.umask(0)
            os.umask(umask)
            self._mode = 0o666 & ~umask

    def commit(self) -> Path:
        """fsync the temporary file, rename it over the target, fsync the folder."""
        with open(self.temp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(self.temp, self._mode)
        os.replace(self.temp, self.target)
        self.done = True
        try:
            dir_fd = os.open(self.target.parent if str(self.target.parent) else ".", os.O_RDONLY)
        except OSError:
            return self.target
        try:
            os.fsync(dir_fd)
        except OSError:
            pass
        finally:
            os.close(dir_fd)
        return self.target

    def discard(self) -> None:
        """Delete the temporary file (idempotent)."""
        if not self.done:
            self.temp.unlink(missing_ok=True)
            self.done = True

    def __enter__(self) -> "AtomicOutput":
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.discard()
