"""Open Inference Protocol raw tensor bytes of a request → numpy arrays and lists of bytes."""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

import numpy as np

from service.errors import InvalidInput

# Wire datatypes of the Open Inference Protocol that an image tensor may use.
PIXEL_DTYPES: dict[str, np.dtype] = {"UINT8": np.dtype(np.uint8), "FP32": np.dtype("<f4")}


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
