"""Image decoding shared fairly between requests: a pixel budget each, and turns in the pool.

Decoding a request as one pool task let two requests of many large images hold every decode
thread while a small request queued behind them (head-of-line blocking). Here each image is its
own pool task, and a request has at most ``decode_tasks_per_request`` of them in the pool at
once: the pool's FIFO then interleaves the requests' images, so a new request waits for a few
images of the others, not for whole requests. Before any pixel is decoded, the image headers are
read (cheap: sizes only) and a request over ``max_request_pixels`` is refused (413).
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Sequence
from concurrent.futures import Executor

import numpy as np
from PIL import Image

from contract.imaging import ImageTooLarge
from contract.imaging import decode_image as decode_file
from contract.metadata import InputSpec
from service.errors import InvalidInput, PayloadTooLarge


def decode_image(data: bytes, spec: InputSpec, max_pixels: int, index: int = 0) -> np.ndarray:
    """One encoded image (any format Pillow reads) → uint8 ``[H, W, C]`` of the model's input."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidInput(f"image {index} must be bytes, got {type(data).__name__}")
    if not data:
        raise InvalidInput(f"image {index} is empty (0 bytes)")
    size = (spec.height, spec.width)
    try:
        data = data if isinstance(data, bytes) else bytes(data)
        return decode_file(data, spec.color_mode, size, spec.resize_method, max_pixels)
    except ImageTooLarge as exc:
        raise PayloadTooLarge(f"image {index} is {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidInput(f"image {index} could not be decoded: {exc}") from None


def request_pixels(images: Sequence[bytes]) -> int:
    """Width x height summed over the images, from their headers (an undecodable one counts 0)."""
    return sum(_pixels(data) for data in images)


def _pixels(data: bytes) -> int:
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except Exception:  # noqa: BLE001 - decoding reports it, with the image's index
        return 0
    return width * height


class FairDecoder:
    """``await decode(images, spec)`` → uint8 ``[N, H, W, C]``; requests take turns in the pool."""

    def __init__(
        self, executor: Executor, tasks_per_request: int, max_request_pixels: int, max_pixels: int
    ) -> None:
        self._executor = executor
        self._lanes = tasks_per_request
        self._budget = max_request_pixels
        self._max_pixels = max_pixels

    async def decode(self, images: Sequence[bytes], spec: InputSpec) -> np.ndarray:
        loop = asyncio.get_running_loop()
        out = np.empty((len(images), spec.height, spec.width, spec.channels), dtype=np.uint8)
        # The budget check and the first image share one pool task, so a one-image
        # request costs one hop to the pool, as before.
        out[0] = await loop.run_in_executor(self._executor, self._first, images, spec)
        pending = iter(range(1, len(images)))

        async def lane() -> None:
            for i in pending:  # One shared iterator: each index is taken by one lane
                out[i] = await loop.run_in_executor(
                    self._executor, decode_image, images[i], spec, self._max_pixels, i
                )

        lanes = [asyncio.ensure_future(lane()) for _ in range(min(self._lanes, len(images) - 1))]
        try:
            await asyncio.gather(*lanes)
        except BaseException:
            # The first bad image (or the client going away) stops the other lanes, so no
            # more of this request's images are decoded for nothing.
            for task in lanes:
                task.cancel()
            raise
        return out

    def _first(self, images: Sequence[bytes], spec: InputSpec) -> np.ndarray:
        pixels = request_pixels(images)
        if pixels > self._budget:
            raise PayloadTooLarge(
                f"the request's {len(images)} image(s) hold {pixels} pixels, over this server's "
                f"budget of {self._budget} per request (VISOR_MAX_REQUEST_PIXELS): send fewer or "
                "smaller images per request"
            )
        return decode_image(images[0], spec, self._max_pixels, 0)
