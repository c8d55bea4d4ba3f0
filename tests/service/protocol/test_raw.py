"""Wire-tensor codecs: raw tensors as views of the request's bytes, checked; BYTES tensors."""

from __future__ import annotations

import numpy as np
import pytest

from contract.metadata import InputSpec
from service.errors import InvalidInput
from service.limits import check_pixels
from service.protocol.raw import bytes_from_raw, tensor_from_bytes
from service.protocol.response import bytes_to_raw

GRAY = InputSpec(
    name="x", height=4, width=6, channels=1, color_mode="grayscale", resize_method="nearest"
)


def test_raw_tensors_are_views_and_checked() -> None:
    raw = np.arange(2 * 4 * 6, dtype=np.uint8).tobytes()
    x = tensor_from_bytes(raw, "UINT8", [2, 4, 6, 1])
    assert x.shape == (2, 4, 6, 1) and not x.flags.owndata
    assert check_pixels(x, GRAY, 8) is x or np.shares_memory(check_pixels(x, GRAY, 8), x)
    with pytest.raises(InvalidInput, match="needs"):
        tensor_from_bytes(raw[:-1], "UINT8", [2, 4, 6, 1])
    inf = np.zeros((1, 4, 6, 1), np.float32)
    inf[0, 1, 2, 0] = np.inf
    with pytest.raises(InvalidInput, match="NaN or infinite"):
        check_pixels(inf, GRAY, 8)


def test_bytes_tensor_round_trip() -> None:
    items = [b"", b"abc", bytes(range(256))]
    assert bytes_from_raw(bytes_to_raw(items)) == items
