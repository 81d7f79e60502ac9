#!/usr/bin/python3
"""A real RTSP server that behaves like an IP camera, for the tests and the live benchmarks.

Runs under Debian's system Python with gst-rtsp-server (``apt-get install
gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-ugly gstreamer1.0-rtsp``)::

    /usr/bin/python3 tests/servers/rtsp_camera.py --port 8554 --path /cam --size 320x240 --fps 25

serves a moving test pattern (with a running clock overlay when available) encoded as
H.264 at ``rtsp://127.0.0.1:PORT/PATH``. ``--user/--password`` require basic
authentication. It prints ``READY <url>`` on stdout once it listens, and runs until killed.

Options for tests and measurements:

``--stamp``
    Instead of videotestsrc, frames are drawn here: a moving bar, and in the top 16 rows a
    barcode of the wall-clock time (``time.time()``, milliseconds) at which the frame was
    captured, so a receiver can measure glass-to-glass latency from the picture alone
    (:func:`benchmarks.live_latency.read_stamp` decodes it). Layout: 56 cells of
    ``(width - 16) // 56`` pixels from x = 8, white (Y 235) = 1, black (Y 16) = 0; 48 bits of
    milliseconds, most significant first, then 8 bits: the XOR of those 6 bytes.
``--audio``
    Adds an AAC audio stream (a 440 Hz tone), like a camera with a microphone (not together
    with ``--stamp``: gst-rtsp-server cannot start that pair).

Commands on standard input, one per line (the server answers ``OK <command>``):

``stall``
    Stop sending media but keep the session (RTCP and the connection stay alive): a camera
    that hangs without disconnecting. ``resume`` sends again.
"""
import argparse
import sys
import time

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

STAMP_BITS = 56


def stamp_row_cells(ms, width):
    """The Y values of one barcode row for capture time ``ms`` (milliseconds)."""
    ms &= (1 << 48) - 1
    check = 0
    for i in range(6):
        check ^= (ms >> (8 * i)) & 0xFF
    value = (ms << 8) | check
    cell = max(1, (width - 16) // STAMP_BITS)
    row = bytearray(b"\x80" * width)
    for bit in range(STAMP_BITS):
        on = (value >> (STAMP_BITS - 1 - bit)) & 1
        start = 8 + bit * cell
        row[start:start + cell] = (b"\xeb" if on else b"\x10") * cell
    return bytes(row)


class StampedFrames:
    """I420 frames drawn in Python: a moving bar and the capture-time barcode."""

    def __init__(self, width, height, fps):
        self.width, self.height, self.fps = width, height, fps
        self.count = 0
        self.background = bytes((16 + (x * 200) // max(1, width - 1)) for x in range(width))
        chroma = (width // 2) * (height // 2)
        self.chroma = b"\x80" * chroma * 2
        self.bar = max(4, width // 16)

    def next(self, now):
        w, h = self.width, self.height
        x0 = (self.count * 4) % max(1, w - self.bar)
        self.count += 1
        row = self.background[:x0] + b"\xeb" * self.bar + self.background[x0 + self.bar:]
        stamp = stamp_row_cells(int(now * 1000), w)
        rows = min(16, h)
        return stamp * rows + row * (h - rows) + self.chroma


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8554)
    ap.add_argument("--path", default="/cam")
    ap.add_argument("--size", default="320x240")
    ap.add_argument("--fps", type=int, default=25)
    ap.add_argument("--pattern", default="ball", help="videotestsrc pattern (ball moves)")
    ap.add_argument("--gop", type=int, default=25, help="keyframe interval in frames")
    extra = ap.add_mutually_exclusive_group()
    extra.add_argument("--stamp", action="store_true", help="draw the capture time as a barcode")
    extra.add_argument("--audio", action="store_true", help="add an AAC audio stream")
    ap.add_argument("--user")
    ap.add_argument("--password")
    args = ap.parse_args()

    Gst.init(None)
    width, height = (int(v) for v in args.size.lower().split("x"))
    if args.stamp:
        source = (f"appsrc name=stampsrc is-live=true do-timestamp=true format=time "
                  f"caps=video/x-raw,format=I420,width={width},height={height},framerate={args.fps}/1 "
                  f"! queue max-size-buffers=2 leaky=downstream")
    else:
        overlay = " ! timeoverlay font-desc=\"Sans 12\"" if Gst.ElementFactory.find("timeoverlay") else ""
        source = (f"videotestsrc is-live=true pattern={args.pattern} "
                  f"! video/x-raw,width={width},height={height},framerate={args.fps}/1,format=I420{overlay}")
    launch = (
        f"( {source} ! valve name=videovalve drop=false "
        f"! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={args.gop} bitrate=800 "
        f"! video/x-h264,profile=baseline ! rtph264pay name=pay0 pt=96 config-interval=1 "
    )
    if args.audio:
        launch += ("audiotestsrc is-live=true wave=sine freq=440 volume=0.2 "
                   "! audio/x-raw,rate=16000,channels=1 ! valve name=audiovalve drop=false "
                   "! voaacenc bitrate=32000 ! rtpmp4gpay name=pay1 pt=97 ")
    launch += ")"

    medias = []
    frames = StampedFrames(width, height, args.fps) if args.stamp else None

    def configure(factory, media):
        element = media.get_element()
        medias.append(element)
        if frames is not None:
            appsrc = element.get_by_name_recurse_up("stampsrc")
            interval = max(1, int(round(1000 / args.fps)))
            done = []
            media.connect("unprepared", lambda m: done.append(True))

            def push():
                if done:
                    return False
                data = frames.next(time.time())
                appsrc.emit("push-buffer", Gst.Buffer.new_wrapped(data))
                return True
            GLib.timeout_add(interval, push)

    server = GstRtspServer.RTSPServer()
    server.set_address(args.host)
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch)
    factory.set_shared(True)
    factory.connect("media-configure", configure)
    if args.user:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "user")
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password or ""), token)
        server.set_auth(auth)
        perms = GstRtspServer.RTSPPermissions()
        perms.add_role("user")
        perms.add_permission_for_role("user", GstRtspServer.RTSP_PERM_MEDIA_FACTORY_ACCESS, True)
        perms.add_permission_for_role("user", GstRtspServer.RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, True)
        factory.set_permissions(perms)
    server.get_mount_points().add_factory(args.path, factory)
    if server.attach(None) == 0:
        print(f"ERROR cannot listen on {args.host}:{args.port}", flush=True)
        return 1

    def command(channel, condition):
        line = sys.stdin.readline()
        if not line:
            return False  # stdin closed: keep serving, stop watching
        word = line.strip()
        if word in ("stall", "resume"):
            for element in medias:
                for name in ("videovalve", "audiovalve"):
                    valve = element.get_by_name_recurse_up(name)
                    if valve is not None:
                        valve.set_property("drop", word == "stall")
        print(f"OK {word}", flush=True)
        return True

    GLib.io_add_watch(GLib.IOChannel.unix_new(sys.stdin.fileno()), GLib.IO_IN | GLib.IO_HUP, command)
    print(f"READY rtsp://{args.host}:{args.port}{args.path}", flush=True)
    try:
        GLib.MainLoop().run()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
