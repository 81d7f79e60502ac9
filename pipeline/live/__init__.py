"""Live cameras: network inputs that reconnect, bounded latency, recording and restreaming.

The file pipeline (:mod:`pipeline.source`, :mod:`pipeline.runner`, :mod:`pipeline.sink`) does
the decoding, inference and encoding; this package adds what a camera left running for days
needs around it:

- :mod:`~pipeline.live.inputs`: what an INPUT is (file, stdin, RTSP/RTMP/SRT/UDP/HTTP URL) and
  the FFmpeg options that open it with timeouts and low delay;
- :mod:`~pipeline.live.source`: :class:`LiveSource`, a source that watches every read, reopens a
  stalled or dropped input with exponential backoff and keeps output timestamps monotonic;
- :mod:`~pipeline.live.latest`: the hand-over queue that drops stale frames to bound latency;
- :mod:`~pipeline.live.outputs`: crash-safe recordings, time-named segments, restreaming;
- :mod:`~pipeline.live.stats`: fps in/out, latency percentiles, drops, reconnects, status line;
- :mod:`~pipeline.live.pacing`: frames taken from the camera just when the network is ready;
- :mod:`~pipeline.live.backoff`: exponential backoff with a cap between reconnections;
- :mod:`~pipeline.live.job`: one camera from input to output (:func:`process_live`);
- :mod:`~pipeline.live.cameras`: several cameras in one process sharing one loaded network;
- :mod:`~pipeline.live.options` / :mod:`~pipeline.live.cli`: the ``derain-video`` options and run.
"""
