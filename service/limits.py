"""Request limits the engine checks once it knows the model: batch size, pixel tensor shape."""

from __future__ import annotations

import math

import numpy as np

from contract.metadata import InputSpec
from service.errors import InvalidInput


def check_pixels(pixels: np.ndarray, spec: InputSpec, max_images: int) -> np.ndarray:
    """Validate a raw pixel batch against the model's input; return it C-contiguous, uncopied."""
    if not isinstance(pixels, np.ndarray):
        raise InvalidInput("pixels must be an array")
    if pixels.dtype != np.uint8 and pixels.dtype != np.float32:
        raise InvalidInput(f"pixel dtype must be UINT8 or FP32, got {pixels.dtype}")
    want = (spec.height, spec.width, spec.channels)
    if pixels.ndim != 4 or pixels.shape[1:] != want:
        raise InvalidInput(
            f"pixel tensor shape must be [N, {want[0]}, {want[1]}, {want[2]}], got {list(pixels.shape)}"
        )
    check_batch_size(pixels.shape[0], max_images)
    # One float64 sum is exact for float32 input (no overflow) and NaN/inf propagate,
    # so this finds any non-finite pixel in one vectorised pass.
    if pixels.dtype == np.float32 and not math.isfinite(float(pixels.sum(dtype=np.float64))):
        raise InvalidInput("pixel tensor contains NaN or infinite values")
    return np.ascontiguousarray(pixels)


def check_batch_size(n: int, max_images: int) -> None:
    if n == 0:
        raise InvalidInput("the batch is empty: send at least one image")
    if n > max_images:
        raise InvalidInput(f"{n} images in one request, over the limit of {max_images}")
