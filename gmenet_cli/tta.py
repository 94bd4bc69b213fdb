"""Flip test-time augmentation, defined once for every backend: the mean of the logits of each face and of its
mirror image. No torch or numpy import here: evaluate passes torch tensors (or groups of them), predict's ONNX
path numpy arrays."""

from __future__ import annotations

from typing import Callable, TypeVar

Faces = TypeVar("Faces")


def flip_average(logits: Callable, faces: Faces, mirror: Callable[[Faces], Faces]):
    """(logits(faces) + logits(mirror(faces))) / 2."""
    return (logits(faces) + logits(mirror(faces))) / 2
