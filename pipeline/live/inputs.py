"""What an INPUT is, and the FFmpeg options that open it as a live source.

:func:`classify_input` tells files, standard input (``-``) and network URLs apart;
:func:`open_options` builds the demuxer/protocol options PyAV passes to FFmpeg:

=============  ==============================================================================
protocol       options (timeouts are in microseconds, as FFmpeg wants them)
=============  ==============================================================================
rtsp, rtsps    ``rtsp_transport`` tcp (default) or udp, ``timeout`` (socket I/O; ``stimeout``
               before libavformat 59), UDP: ``buffer_size`` and a short ``reorder_queue_size``
rtmp, rtmps    ``rw_timeout`` (RTMP's own ``timeout`` is a *listen* timeout)
srt            ``timeout`` (needs an FFmpeg built with libsrt)
udp, rtp       ``timeout``, ``overrun_nonfatal``, a 4 MB ``buffer_size`` and ``fifo_size``
tcp            ``rw_timeout``
http(s), hls   ``rw_timeout``; files served over HTTP also resume after errors (``reconnect``)
=============  ==============================================================================

Live sources also get ``flags=low_delay`` and a short probe (``probesize`` 500 kB,
``analyzeduration`` 0.5 s) so the first frame comes quickly. ``fflags=nobuffer`` is *not*
used: it throws away the packets read while probing, keyframe included, so the first frame
would only come with the camera's next keyframe (seconds later); the probed backlog is
instead handled like any other late frames. PyAV's own
open/read timeout is set as well (see :class:`pipeline.live.source.LiveSource`), so a source
that accepts a connection and then never sends cannot hang the pipeline.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

import av

from ..util import is_url, redact_url
from .options import TRANSPORTS

__all__ = ["InputSpec", "classify_input", "open_options", "NETWORK_PROTOCOLS", "STREAM_PROTOCOLS",
           "TRANSPORTS"]

#: URL schemes read from the network.
NETWORK_PROTOCOLS = frozenset({"rtsp", "rtsps", "rtmp", "rtmps", "rtmpt", "rtmpe", "rtmpts", "srt",
                               "udp", "rtp", "tcp", "http", "https", "hls", "mmsh", "mmst"})
#: Network schemes that are streams by nature (live by default, reconnected when they end).
#: HTTP(S) may serve a file as well as a stream: it counts as live only when the opened
#: input has no known duration.
STREAM_PROTOCOLS = NETWORK_PROTOCOLS - {"http", "https"}

_LIVE_PROBE = {"probesize": "500000", "analyzeduration": "500000"}


@dataclass(frozen=True)
class InputSpec:
    """One INPUT as given on the command line, classified."""

    text: str      # as the user wrote it (may hold a password: never log it)
    url: str       # what FFmpeg opens ("pipe:0" for "-")
    shown: str     # safe to log (password replaced by ***)
    kind: str      # "file", "stdin" or "network"
    protocol: str  # "file", "pipe", or the URL scheme in lower case

    @property
    def is_network(self) -> bool:
        return self.kind == "network"

    @property
    def is_stream_protocol(self) -> bool:
        """A camera-like protocol (RTSP, RTMP, SRT, UDP...): live by default."""
        return self.protocol in STREAM_PROTOCOLS

    @property
    def can_reconnect(self) -> bool:
        """Network inputs can be opened again; stdin and files cannot (their end is the end)."""
        return self.is_network


def classify_input(text: str) -> InputSpec:
    """``-`` (or ``pipe:``) is standard input, ``scheme://`` a URL, anything else a file path.
    ``file:`` URLs are files. Unknown schemes are passed to FFmpeg as network URLs."""
    value = str(text)
    if value in ("-", "pipe:", "pipe:0", "/dev/stdin"):
        return InputSpec(value, "pipe:0", "stdin", "stdin", "pipe")
    if is_url(value):
        scheme = urlsplit(value).scheme.lower()
        if scheme == "file":
            return InputSpec(value, value, redact_url(value), "file", "file")
        return InputSpec(value, value, redact_url(value), "network", scheme)
    return InputSpec(value, value, value, "file", "file")


def _lavf_major() -> int:
    return int(av.library_versions.get("libavformat", (62, 0, 0))[0])


def _micros(seconds: float) -> str:
    return str(max(1, int(round(seconds * 1_000_000))))


def open_options(spec: InputSpec, *, live: bool, timeout: float | None, transport: str = "tcp",
                 extra: dict[str, str] | None = None) -> dict[str, str]:
    """FFmpeg options for opening ``spec``. ``timeout`` (seconds) bounds every socket read;
    ``extra`` (the user's ``--input-option`` values) wins over everything chosen here."""
    if transport not in TRANSPORTS:
        raise ValueError(f"--rtsp-transport must be tcp or udp, got {transport!r}")
    opts: dict[str, str] = {}
    proto = spec.protocol
    if live:
        opts.update({"flags": "low_delay", **_LIVE_PROBE})
    if timeout is not None and timeout > 0:
        t = _micros(timeout)
        if proto in ("rtsp", "rtsps"):
            opts["timeout" if _lavf_major() >= 59 else "stimeout"] = t
        elif proto in ("srt", "udp", "rtp"):
            opts["timeout"] = t
        elif spec.is_network:
            opts["rw_timeout"] = t
    if proto in ("rtsp", "rtsps"):
        opts["rtsp_transport"] = "tcp" if proto == "rtsps" else transport
        if transport == "udp" and proto == "rtsp":
            opts["buffer_size"] = str(4 << 20)
            # A short reorder queue: late UDP packets are given up quickly (low delay).
            opts["reorder_queue_size"] = "64"
    elif proto in ("udp", "rtp"):
        opts.update({"overrun_nonfatal": "1", "buffer_size": str(4 << 20), "fifo_size": "1000000"})
    elif proto in ("http", "https") and not live:
        # A file served over HTTP: resume with a range request after a dropped connection.
        opts.update({"reconnect": "1", "reconnect_on_network_error": "1", "reconnect_delay_max": "10"})
    opts.update(extra or {})
    return opts


_PERMANENT = re.compile(r"401|403|404|unauthori[sz]ed|forbidden|not found|protocol not found|"
                        r"invalid argument|no such file|permission denied|unsupported", re.IGNORECASE)


def is_permanent(reason: str) -> bool:
    """Errors that retrying cannot fix (bad credentials, wrong path, missing protocol). Used for
    the *first* connection only: once a camera has worked, every failure is retried."""
    return bool(_PERMANENT.search(reason))
