"""Small helpers shared by the pipeline, the CLI and the live-camera code.

:func:`redact_url` hides credentials before anything is logged; :func:`parse_time` reads
``--start``/``--duration`` values; :func:`format_seconds` prints durations.
"""
from __future__ import annotations

import re
from fractions import Fraction

__all__ = ["redact_url", "is_url", "parse_time", "format_seconds"]

# The authority's user info runs to the last "@" before the path (passwords may contain "@").
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<info>[^/\s]*)@")
_SECRET_QUERY = re.compile(
    r"(?P<key>[?&;](?:password|passwd|pass|pwd|token|access_token|auth|authorization|apikey|api_key|secret|key)=)"
    r"[^&;#\s]*", re.IGNORECASE)


def redact_url(text: str) -> str:
    """Hide passwords in every URL inside ``text``.

    ``rtsp://admin:s3cret@cam/stream`` -> ``rtsp://admin:***@cam/stream``; credential-like
    query parameters (``password=``, ``token=``, ``key=``...) become ``***`` too. Text without
    URLs is returned unchanged, so it is safe to call on any message or path.
    """
    def userinfo(m: re.Match[str]) -> str:
        user, colon, _ = m.group("info").partition(":")
        if colon:  # user:password@ -> user:***@
            return f"{m.group('scheme')}{user}:***@"
        return m.group(0)  # a user name alone is not a secret

    text = _USERINFO.sub(userinfo, text)
    return _SECRET_QUERY.sub(lambda m: f"{m.group('key')}***", text) if "://" in text else text


def is_url(text: str) -> bool:
    """True for ``scheme://...`` inputs (RTSP, HTTP, SRT...), false for file paths."""
    return re.match(r"^[a-zA-Z][a-zA-Z0-9+.\-]*://", text) is not None


def parse_time(text: str) -> Fraction:
    """``"12.5"``, ``"1:02.5"`` or ``"01:02:03.25"`` -> exact seconds as a Fraction (>= 0)."""
    value = text.strip()
    parts = value.split(":")
    if not value or len(parts) > 3:
        raise ValueError(f"invalid time {text!r} (use seconds, MM:SS or HH:MM:SS[.fff])")
    try:
        numbers = [Fraction(p) for p in parts]
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"invalid time {text!r} (use seconds, MM:SS or HH:MM:SS[.fff])") from None
    seconds = Fraction(0)
    for n in numbers:
        seconds = seconds * 60 + n
    if seconds < 0 or any(n < 0 for n in numbers):
        raise ValueError(f"invalid time {text!r}: must not be negative")
    return seconds


def format_seconds(seconds: float) -> str:
    """``3725.5`` -> ``"1:02:05.50"``; under a minute: ``"12.34s"``."""
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours}:{minutes:02d}:{secs:05.2f}" if hours else f"{minutes}:{secs:05.2f}"
