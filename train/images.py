"""Reading and writing 8-bit RGB images for training and scoring (OpenCV underneath).

Every failure is a :class:`DataError` with a one-line message naming the file.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

#: File name endings treated as images (case-insensitive).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class DataError(ValueError):
    """Training or evaluation data that cannot be used (layout, pairing, unreadable files)."""


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def read_rgb(path: "str | os.PathLike[str]") -> np.ndarray:
    """Decode an image file to an ``(H, W, 3)`` uint8 RGB array (grey and alpha are converted)."""
    path = Path(path)
    try:
        blob = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise DataError(f"cannot read image {path}: {exc.strerror or exc}") from None
    image = cv2.imdecode(blob, cv2.IMREAD_COLOR) if blob.size else None
    if image is None:
        raise DataError(f"cannot read image {path}: not a decodable image file")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def write_rgb(path: "str | os.PathLike[str]", image: np.ndarray) -> Path:
    """Encode ``(H, W, 3)`` uint8 RGB to ``path`` (format from its suffix) atomically."""
    path = Path(path)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
    ok, blob = cv2.imencode(path.suffix or ".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise DataError(f"cannot encode an image as {path.suffix!r} for {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob.tobytes())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
