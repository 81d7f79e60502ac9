"""Exit codes and the exceptions that carry them from anywhere in the pipeline to the CLI.

Every failure a user can cause or meet is one of these, with a one-line message; the CLI
prints ``derain-video: error: <message>`` and exits with :attr:`DerainError.exit_code`.
"""
from __future__ import annotations

import signal
from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit status of ``derain-video`` (listed in ``--help``)."""

    OK = 0
    FAILURE = 1        # runtime failure: encoder or disk error, internal error
    USAGE = 2          # bad arguments or unusable input (missing, not a video, unsupported)
    MODEL = 3          # the model/checkpoint cannot be loaded
    SOURCE_LOST = 4    # a live input could not be (re)connected within --max-reconnects
    INTERRUPTED = 130  # SIGINT (Ctrl-C)
    TERMINATED = 143   # SIGTERM


class DerainError(Exception):
    """Base class: a failure with a one-line message and an exit code."""

    exit_code: ExitCode = ExitCode.FAILURE


class UsageError(DerainError):
    """Invalid command line or paths (output exists, output is the input...)."""

    exit_code = ExitCode.USAGE


class InputError(DerainError):
    """The input cannot be processed: missing, not media, no video stream, unsupported codec."""

    exit_code = ExitCode.USAGE


class ModelError(DerainError):
    """The network cannot be loaded (missing or invalid checkpoint, unknown preset)."""

    exit_code = ExitCode.MODEL


class PipelineError(DerainError):
    """A failure while running: encoder error, write error, a stage crashed."""

    exit_code = ExitCode.FAILURE


class Cancelled(DerainError):
    """The run was stopped by a signal (or a caller's cancel request)."""

    def __init__(self, message: str = "interrupted", signum: int | None = None) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = ExitCode.TERMINATED if signum == signal.SIGTERM else ExitCode.INTERRUPTED
