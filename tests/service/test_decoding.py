"""Image decoding (formats, modes, EXIF, bomb limit)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from contract.metadata import InputSpec
from service.decoding import decode_image
from service.errors import InvalidInput, PayloadTooLarge

GRAY = InputSpec(
    name="x", height=4, width=6, channels=1, color_mode="grayscale", resize_method="nearest"
)
RGB = InputSpec(name="x", height=4, width=6, channels=3, color_mode="rgb", resize_method="bilinear")


def save(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP", "GIF"])
def test_formats_decode_to_the_model_input(fmt: str) -> None:
    image = Image.new("RGB", (12, 8), (200, 30, 30))
    out = decode_image(save(image, fmt), RGB, 10_000)
    assert out.shape == (4, 6, 3) and out.dtype == np.uint8
    assert abs(int(out[..., 0].mean()) - 200) < 12 and out[..., 1].mean() < 45


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "CMYK", "I;16", "1"])
def test_colour_modes_convert(mode: str) -> None:
    base = Image.new("RGB", (6, 4), (255, 255, 255))
    image = Image.new("I;16", (6, 4), 65535) if mode == "I;16" else base.convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    for spec in (GRAY, RGB):
        out = decode_image(save(image, fmt), spec, 10_000)
        assert out.shape == (4, 6, spec.channels)
        assert out.min() >= 240, (mode, out.min())  # white stays white (16-bit scaled, not clipped)


def test_exif_orientation_is_applied() -> None:
    image = Image.new("L", (6, 4), 0)  # stored landscape, a bright left column
    image.paste(255, (0, 0, 1, 4))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display → the bright column becomes the top row
    data = save(image, "PNG", exif=exif)
    spec = InputSpec(
        name="x", height=6, width=4, channels=1, color_mode="grayscale", resize_method="nearest"
    )
    out = decode_image(data, spec, 10_000)[..., 0]
    assert out[0].mean() > 200 and out[1:].mean() < 20


def test_gif_first_frame() -> None:
    frames = [Image.new("L", (6, 4), v) for v in (250, 0)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    assert decode_image(buf.getvalue(), GRAY, 10_000).min() > 240


def test_decompression_bomb_limit() -> None:
    data = save(Image.new("L", (200, 200)), "PNG")
    with pytest.raises(PayloadTooLarge, match="40000 pixels"):
        decode_image(data, GRAY, 10_000)


@pytest.mark.parametrize("data", [b"", b"garbage", save(Image.new("L", (6, 4)), "PNG")[:30]])
def test_bad_bytes_are_invalid_input(data: bytes) -> None:
    with pytest.raises(InvalidInput, match="image 0"):
        decode_image(data, GRAY, 10_000)
