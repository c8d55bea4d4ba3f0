"""Image bytes and wire tensors ↔ numpy arrays, one function per direction.

Image conversion and resizing come from ``service.imaging``, which training uses too, so a served
image is preprocessed exactly as the training images were.
"""

from __future__ import annotations

import io
import math
import struct
import warnings
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from service.errors import InvalidInput, PayloadTooLarge
from service.imaging import RESAMPLING, to_mode
from service.metadata import InputSpec

# NOTE: wire datatypes of the Open Inference Protocol that an image tensor may use.
PIXEL_DTYPES: dict[str, np.dtype] = {"UINT8": np.dtype(np.uint8), "FP32": np.dtype("<f4")}


def decode_image(data: bytes, spec: InputSpec, max_pixels: int, index: int = 0) -> np.ndarray:
    """Encoded image (JPEG/PNG/WebP/BMP/GIF...) → uint8 ``[H, W, C]`` of the model's input."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidInput(f"image {index} must be bytes, got {type(data).__name__}")
    if not data:
        raise InvalidInput(f"image {index} is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise PayloadTooLarge(
                    f"image {index} is {width}x{height} = {width * height} pixels, over the "
                    f"limit of {max_pixels} (decompression-bomb guard)"
                )
            image.seek(0)  # NOTE: animated GIF/WebP: the first frame only
            image.load()
            image = ImageOps.exif_transpose(image)
            image = to_mode(image, spec.color_mode)
            if image.size != (spec.width, spec.height):
                image = image.resize((spec.width, spec.height), RESAMPLING[spec.resize_method])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PayloadTooLarge(f"image {index}: {exc}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidInput(f"image {index} could not be decoded: {exc}") from None
    pixels = np.asarray(image, dtype=np.uint8)
    return pixels[..., None] if pixels.ndim == 2 else pixels


def decode_images(images: Sequence[bytes], spec: InputSpec, max_pixels: int) -> np.ndarray:
    """Several encoded images → one uint8 ``[N, H, W, C]`` array (runs in a worker thread)."""
    out = np.empty((len(images), spec.height, spec.width, spec.channels), dtype=np.uint8)
    for i, data in enumerate(images):
        out[i] = decode_image(data, spec, max_pixels, i)
    return out


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
    # NOTE: one float64 sum is exact for float32 input (no overflow) and NaN/inf propagate,
    # so this finds any non-finite pixel in one vectorised pass.
    if pixels.dtype == np.float32 and not math.isfinite(float(pixels.sum(dtype=np.float64))):
        raise InvalidInput("pixel tensor contains NaN or infinite values")
    return np.ascontiguousarray(pixels)


def check_batch_size(n: int, max_images: int) -> None:
    if n == 0:
        raise InvalidInput("the batch is empty: send at least one image")
    if n > max_images:
        raise InvalidInput(f"{n} images in one request, over the limit of {max_images}")


def tensor_from_bytes(raw: bytes, datatype: str, shape: Sequence[int]) -> np.ndarray:
    """OIP raw tensor bytes (little-endian, row-major) → array view, without a copy."""
    dtype = PIXEL_DTYPES.get(datatype)
    if dtype is None:
        raise InvalidInput(f"datatype {datatype} is not accepted for pixels: use UINT8 or FP32")
    if any(d < 0 for d in shape):
        raise InvalidInput(f"shape {list(shape)} has a negative dimension")
    count = math.prod(shape)
    if len(raw) != count * dtype.itemsize:
        raise InvalidInput(
            f"raw tensor holds {len(raw)} bytes but {datatype} {list(shape)} needs "
            f"{count * dtype.itemsize}"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def bytes_from_raw(raw: bytes) -> list[bytes]:
    """OIP raw BYTES tensor (each element: 4-byte little-endian length, then the bytes) → list."""
    items: list[bytes] = []
    pos, end = 0, len(raw)
    while pos < end:
        if pos + 4 > end:
            raise InvalidInput("raw BYTES tensor is truncated (incomplete length prefix)")
        (size,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        if pos + size > end:
            raise InvalidInput("raw BYTES tensor is truncated (element longer than the data)")
        items.append(raw[pos : pos + size])
        pos += size
    return items


def bytes_to_raw(items: Sequence[bytes]) -> bytes:
    """list of bytes → OIP raw BYTES tensor."""
    return b"".join(struct.pack("<I", len(b)) + b for b in items)
