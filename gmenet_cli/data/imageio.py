"""Image decoding that never crashes on hostile files.

Every image a command reads comes through `read_image`: it caps file size and pixel count before
decoding, decodes with OpenCV into 8-bit gray or BGR (16-bit, alpha, CMYK and palette images are
converted by OpenCV's decoder), and turns every failure into `ImageError` with a one-line reason.
"""

from __future__ import annotations

import os
from pathlib import Path

MAX_FILE_BYTES = 256 * 1024 * 1024
MAX_PIXELS = 100_000_000  # a 10k x 10k photo; larger headers are refused by the decoder before allocation
# OpenCV reads this limit lazily at the first decode; its default (2^30 pixels = 3 GB BGR) is too generous.
os.environ.setdefault("CV_IO_MAX_IMAGE_PIXELS", str(MAX_PIXELS))
# FFmpeg's own log lines ("[tcp @ 0x...] Connection refused") would reach the user's stderr beside gmenet's
# one-line error for the stream; AV_LOG_QUIET (-8) keeps them off. Read when OpenCV loads its FFmpeg backend.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

import cv2  # noqa: E402
import numpy as np  # noqa: E402


def _silence_opencv() -> None:
    """Keep OpenCV's own "[ WARN:0@...] ... PNG input buffer is incomplete" lines off stderr: every decoding
    failure becomes one ImageError line instead. (cv2.utils.logging in the 4.x wheels; setLogLevel in some
    builds.) Level 0 is LOG_LEVEL_SILENT."""
    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is not None and hasattr(logging, "setLogLevel"):
        logging.setLogLevel(getattr(logging, "LOG_LEVEL_SILENT", 0))
    elif hasattr(cv2, "setLogLevel"):
        cv2.setLogLevel(0)


_silence_opencv()


def peek_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG, JPEG, GIF or BMP header without decoding; None if unknown.

    Lets us refuse decompression bombs before OpenCV allocates them (its own CV_IO_MAX_IMAGE_PIXELS limit
    only applies if set before cv2 is first used, which a host program may already have done)."""
    try:
        if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
            return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        if data[:6] in (b"GIF87a", b"GIF89a"):
            return int.from_bytes(data[6:8], "little"), int.from_bytes(data[8:10], "little")
        if data[:2] == b"BM" and len(data) >= 26:
            return abs(int.from_bytes(data[18:22], "little", signed=True)), abs(
                int.from_bytes(data[22:26], "little", signed=True)
            )
        if data[:2] == b"\xff\xd8":
            i = 2
            while i + 9 < len(data):
                if data[i] != 0xFF:
                    i += 1
                    continue
                marker = data[i + 1]
                if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
                    return int.from_bytes(data[i + 7 : i + 9], "big"), int.from_bytes(data[i + 5 : i + 7], "big")
                if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
                    i += 2 if marker != 0xFF else 1
                    continue
                i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    except (IndexError, ValueError):
        return None
    return None


class ImageError(Exception):
    """An image that cannot be used; the message is a short reason ("truncated or corrupt", ...)."""


def decode_image(data: bytes, channels: int = 3) -> np.ndarray:
    """Bytes -> uint8 array, (H, W) for channels=1 or (H, W, 3) BGR for channels=3."""
    if not data:
        raise ImageError("empty file")
    size = peek_size(data)
    if size is not None and size[0] * size[1] > MAX_PIXELS:
        raise ImageError(f"image too large ({size[0]}x{size[1]}, over {MAX_PIXELS:,} pixels)")
    buf = np.frombuffer(data, dtype=np.uint8)
    flag = cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR
    try:
        img = cv2.imdecode(buf, flag)
    except cv2.error as e:
        msg = str(e)
        if "CV_IO_MAX_IMAGE_PIXELS" in msg or "validateInputImageSize" in msg:
            raise ImageError(f"image too large (over {MAX_PIXELS:,} pixels)") from None
        raise ImageError("cannot decode (corrupt or unsupported image)") from None
    if img is None or img.size == 0:
        raise ImageError("not an image, or truncated/corrupt")
    if img.dtype != np.uint8:  # defensive: IMREAD_COLOR/GRAYSCALE already give 8-bit
        img = (img / 257).astype(np.uint8) if img.dtype == np.uint16 else img.astype(np.uint8)
    return img


def read_image(path: str | Path, channels: int = 3) -> np.ndarray:
    p = Path(path)
    try:
        if p.is_dir():
            raise ImageError("is a directory")
        size = p.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ImageError(f"file too large ({size:,} bytes)")
        data = p.read_bytes()
    except FileNotFoundError:
        raise ImageError("file not found") from None
    except PermissionError:
        raise ImageError("permission denied") from None
    except OSError as e:
        raise ImageError(f"cannot read ({e.strerror or e})") from None
    return decode_image(data, channels)


def to_channels(img: np.ndarray, channels: int) -> np.ndarray:
    """Convert a gray (H, W) or BGR (H, W, 3) uint8 image to `channels` (1 -> (H, W), 3 -> (H, W, 3))."""
    if channels == 1:
        return img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if img.ndim == 2 else img
