"""Decode one image exactly as training does, with Pillow only (no TensorFlow).

Shared by both halves (``training/`` imports it; ``service/`` never imports ``training/``), so a
served image is preprocessed as the training images were: decode, convert to the model's colour
mode, resize to H x W with the recorded method, return uint8 ``[H, W, C]``.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from service.metadata import ColorMode, ResizeMethod

RESAMPLING: dict[ResizeMethod, Image.Resampling] = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "area": Image.Resampling.BOX,
    "lanczos3": Image.Resampling.LANCZOS,
}
GRAYSCALE_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"})


def open_image(source: Path | bytes) -> Image.Image:
    """Open and fully decode an image (raises ``PIL.UnidentifiedImageError``/``OSError`` if bad)."""
    image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    image.load()  # NOTE: Image.open is lazy; load() is what finds truncated/corrupt data.
    return image


def is_grayscale(image: Image.Image) -> bool:
    """True for single-channel modes (1-bit, 8/16/32-bit, with or without alpha)."""
    return image.mode in GRAYSCALE_MODES


def to_mode(image: Image.Image, color_mode: ColorMode) -> Image.Image:
    """Convert to 8-bit L or RGB. 16/32-bit integer images are scaled by 1/257 (not clipped)."""
    if image.mode.startswith("I") or image.mode == "F":
        # NOTE: Pillow's convert("L") clips 16-bit values at 255; scale the 0..65535 range instead.
        pixels = np.asarray(image, dtype=np.float64) / 257.0
        image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), mode="L")
    target = "L" if color_mode == "grayscale" else "RGB"
    # NOTE: alpha is dropped (Pillow's convert), palettes are expanded, CMYK is converted.
    return image if image.mode == target else image.convert(target)


def decode_image(
    source: Path | bytes, color_mode: ColorMode, size: tuple[int, int], resize_method: str
) -> np.ndarray:
    """Decode (first frame), apply EXIF orientation, convert, resize: uint8 ``[H, W, C]``."""
    # NOTE: EXIF orientation applied, as service/codecs.py does: photos are seen upright.
    image = to_mode(ImageOps.exif_transpose(open_image(source)), color_mode)
    height, width = size
    if image.size != (width, height):
        image = image.resize((width, height), resample=RESAMPLING[resize_method])
    pixels = np.asarray(image, dtype=np.uint8)
    return pixels[..., None] if pixels.ndim == 2 else pixels
