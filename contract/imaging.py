"""Decode one image exactly as training does, with Pillow only (no TensorFlow).

Training and serving both call :func:`decode_image`, so a served image is preprocessed as the
training images were: first frame, EXIF orientation, the model's colour mode, resized to H x W
with the recorded method, uint8 ``[H, W, C]``.
"""

from __future__ import annotations

import functools
import io
import warnings
from pathlib import Path

import numpy as np
from PIL import EpsImagePlugin, Image, ImageFile, ImageOps

from contract.metadata import ColorMode, ResizeMethod

RESAMPLING: dict[ResizeMethod, Image.Resampling] = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "area": Image.Resampling.BOX,
    "lanczos3": Image.Resampling.LANCZOS,
}
GRAYSCALE_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
# Pillow opens these but reads only their header: the pixels would be blank.
HEADER_ONLY_FORMATS = frozenset({"MPEG"})


@functools.cache
def image_suffixes() -> frozenset[str]:
    """File suffixes (lower case, with the dot) of every format this Pillow decodes.

    One list for training, scoring and the web page (the server takes any bytes Pillow decodes,
    whatever their name). Derived from Pillow's registry, so a Pillow that learns a format
    brings it everywhere at once. Left out: stub formats that need a handler Visor does not
    install (HDF5, GRIB, BUFR, WMF), formats Pillow only identifies, and EPS/PS when Ghostscript
    is not installed.
    """
    Image.init()
    suffixes = set()
    for suffix, fmt in Image.registered_extensions().items():
        opener = Image.OPEN.get(fmt, (None,))[0]
        if opener is None or fmt in HEADER_ONLY_FORMATS:
            continue
        if isinstance(opener, type) and issubclass(opener, ImageFile.StubImageFile):
            continue
        if fmt == "EPS" and not EpsImagePlugin.has_ghostscript():
            continue
        suffixes.add(suffix.lower())
    return frozenset(suffixes)


def is_image_file(path: Path) -> bool:
    """Whether ``path`` has the suffix of a format Pillow decodes (see :func:`image_suffixes`)."""
    return path.suffix.lower() in image_suffixes()


class ImageTooLarge(ValueError):
    """An image whose header claims more pixels than the caller allows."""


def open_image(source: Path | bytes, max_pixels: int | None = None) -> Image.Image:
    """Open and fully decode the first frame; raises ``ImageTooLarge`` past ``max_pixels``.

    Pillow's own errors (``UnidentifiedImageError``, ``OSError``, ...) say what else was wrong.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
            width, height = image.size
            if max_pixels is not None and width * height > max_pixels:
                raise ImageTooLarge(
                    f"{width}x{height} = {width * height} pixels, over the limit of {max_pixels} "
                    "(decompression-bomb guard)"
                )
            image.seek(0)  # animated GIF/WebP, multi-page TIFF: the first frame
            image.load()  # Image.open is lazy: load() finds truncated or corrupt data
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageTooLarge(str(exc)) from None
    return image


def is_grayscale(image: Image.Image) -> bool:
    """True for single-channel modes (1-bit, 8/16/32-bit, with or without alpha)."""
    return image.mode in GRAYSCALE_MODES


def to_mode(image: Image.Image, color_mode: ColorMode) -> Image.Image:
    """Convert to 8-bit L or RGB. 16/32-bit integer images are scaled by 1/257 (not clipped)."""
    if image.mode.startswith("I") or image.mode == "F":
        # Pillow's convert("L") clips 16-bit values at 255; scale the 0..65535 range instead.
        pixels = np.asarray(image, dtype=np.float64) / 257.0
        image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), mode="L")
    target = "L" if color_mode == "grayscale" else "RGB"
    # Alpha is dropped (Pillow's convert), palettes are expanded, CMYK is converted.
    return image if image.mode == target else image.convert(target)


def decode_image(
    source: Path | bytes,
    color_mode: ColorMode,
    size: tuple[int, int],
    resize_method: str,
    max_pixels: int | None = None,
) -> np.ndarray:
    """Decode (first frame), apply EXIF orientation, convert, resize: uint8 ``[H, W, C]``."""
    image = to_mode(ImageOps.exif_transpose(open_image(source, max_pixels)), color_mode)
    height, width = size
    if image.size != (width, height):
        image = image.resize((width, height), resample=RESAMPLING[resize_method])
    pixels = np.asarray(image, dtype=np.uint8)
    return pixels[..., None] if pixels.ndim == 2 else pixels
