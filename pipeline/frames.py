"""What travels between the pipeline's stages, and the RGB <-> encoder-frame conversions.

A :class:`FrameItem` is one decoded video frame as RGB (plus, after inference, the derained
RGB) with its original timestamp; copied audio/subtitle/data packets travel as plain
``av.Packet`` objects in demux order beside the frames. :data:`END` closes a stream of items.

Colour: decoded frames are converted to RGB with the matrix and range they are tagged with,
and derained RGB is converted back with the same matrix and range, then tagged like the
input, so a player shows the output exactly as it shows the input.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Final

import av
import numpy as np
from av.video.reformatter import Interpolation

from .media import Colour

#: swscale flags for the colour conversions: accurate rounding and full chroma interpolation
#: make RGB <-> YUV round trips unbiased (the fast defaults darken by 1-2 levels per pass).
SWS_FLAGS = (Interpolation.BILINEAR | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT
             | Interpolation.FULL_CHR_H_INP)


@dataclass(slots=True)
class FrameItem:
    """One video frame on its way from the decoder to the encoder."""

    index: int                 # 0-based position in the output
    pts: int                   # presentation time in ``time_base`` units (as written out)
    duration: int              # in ``time_base`` units (> 0)
    time_base: Fraction
    rgb: np.ndarray | None     # decoded input, (H, W, 3) uint8
    out: np.ndarray | None = None  # derained, (H, W, 3) uint8

    @property
    def time(self) -> float:
        return float(self.pts * self.time_base)


class _End:
    __slots__ = ()

    def __repr__(self) -> str:
        return "END"


#: Marks the end of a stream of items.
END: Final = _End()


def chroma_subsampling(pix_fmt: str) -> tuple[bool, bool]:
    """(horizontal, vertical) chroma subsampling of a pixel format (yuv420p -> (True, True))."""
    fmt = av.VideoFormat(pix_fmt)
    if fmt.is_rgb or len(fmt.components) < 3:
        return False, False
    return fmt.chroma_width(2) < 2, fmt.chroma_height(2) < 2


def encoded_size(width: int, height: int, pix_fmt: str) -> tuple[int, int]:
    """The size a frame is encoded at: odd dimensions of subsampled formats round up by one
    (the extra column/row repeats the last one); other formats keep the exact size."""
    sub_w, sub_h = chroma_subsampling(pix_fmt)
    return width + (width % 2 if sub_w else 0), height + (height % 2 if sub_h else 0)


def pad_edge(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """Grow ``rgb`` to ``width`` x ``height`` by repeating its last column/row."""
    h, w = rgb.shape[:2]
    if (w, h) == (width, height):
        return rgb
    return np.pad(rgb, ((0, height - h), (0, width - w), (0, 0)), mode="edge")


def to_rgb(frame: av.VideoFrame, size: tuple[int, int] | None = None) -> np.ndarray:
    """Decoded frame -> ``(H, W, 3)`` uint8 RGB using the frame's own matrix and range
    (optionally scaled to ``size`` = (width, height), for streams that change size)."""
    if size is not None and (frame.width, frame.height) != size:
        return frame.to_ndarray(format="rgb24", width=size[0], height=size[1],
                                interpolation=SWS_FLAGS | Interpolation.BICUBIC)
    return frame.to_ndarray(format="rgb24", interpolation=SWS_FLAGS)


def from_rgb(rgb: np.ndarray, pix_fmt: str, colour: Colour) -> av.VideoFrame:
    """``(H, W, 3)`` uint8 RGB -> an encoder frame in ``pix_fmt`` with ``colour``'s matrix
    and range applied and all four colour tags set."""
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    if pix_fmt == "rgb24":
        out = frame
    else:
        # The destination inherits the source frame's colorspace tag: that selects the
        # RGB -> YUV matrix in swscale; the range is passed explicitly.
        frame.colorspace = colour.space
        out = frame.reformat(format=pix_fmt, dst_color_range=colour.range or None,
                             interpolation=SWS_FLAGS)
    if not av.VideoFormat(pix_fmt).is_rgb:
        out.colorspace = colour.space
        out.color_range = colour.range
    out.color_primaries = colour.primaries
    out.color_trc = colour.trc
    return out
