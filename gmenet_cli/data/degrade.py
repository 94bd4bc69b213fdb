"""Low-resolution synthesis: HR face -> LR face, deterministic per image.

Downsampling by an integer factor with a named OpenCV interpolation (area by default: it averages each
s x s block, which is what a camera sensor integrating light over a larger pixel does), optionally after a
Gaussian blur (optics/motion) and followed by noise and a JPEG round-trip (sensor noise, compression):
real far-away faces have all three. The random parts draw from a generator seeded by (seed, image id,
scale) only, so the bytes do not depend on file order or worker count.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import cv2
import numpy as np

METHODS = {
    "area": cv2.INTER_AREA,
    "bicubic": cv2.INTER_CUBIC,
    "bilinear": cv2.INTER_LINEAR,
    "nearest": cv2.INTER_NEAREST,
}


@dataclass(frozen=True)
class Degradation:
    method: str = "area"
    blur_sigma: float = 0.0
    noise_std: float = 0.0
    jpeg_quality: int = 0
    seed: int = 0


def image_seed(seed: int, image_id: str, scale: int) -> int:
    """A 64-bit seed from (seed, id, scale); stable across runs, platforms and worker counts."""
    digest = hashlib.blake2b(f"{seed}|{image_id}|{scale}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def resize_face(img: np.ndarray, size: int) -> np.ndarray:
    """Any face crop -> size x size (area when shrinking, bicubic when enlarging)."""
    h, w = img.shape[:2]
    if (h, w) == (size, size):
        return img
    interp = cv2.INTER_AREA if size < min(h, w) else cv2.INTER_CUBIC
    return cv2.resize(img, (size, size), interpolation=interp)


def degrade(hr: np.ndarray, scale: int, spec: Degradation, image_id: str) -> np.ndarray:
    """(H, W[, C]) uint8 HR face -> (H/scale, W/scale[, C]) uint8 LR face."""
    h, w = hr.shape[:2]
    size = (w // scale, h // scale)
    img = hr
    if spec.blur_sigma > 0:
        img = cv2.GaussianBlur(img, (0, 0), spec.blur_sigma)
    low = cv2.resize(img, size, interpolation=METHODS[spec.method])
    if spec.noise_std > 0:
        rng = np.random.default_rng(image_seed(spec.seed, image_id, scale))  # only when needed: costs ~25us
        noisy = low.astype(np.float32) + rng.normal(0.0, spec.noise_std, low.shape).astype(np.float32)
        low = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    if spec.jpeg_quality > 0:
        ok, enc = cv2.imencode(".jpg", low, [cv2.IMWRITE_JPEG_QUALITY, int(spec.jpeg_quality)])
        if ok:
            flag = cv2.IMREAD_GRAYSCALE if low.ndim == 2 else cv2.IMREAD_COLOR
            low = cv2.imdecode(enc, flag)
    return low
