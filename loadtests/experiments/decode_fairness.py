"""Head-of-line blocking on decode: a small request's latency while two large requests decode.

    python -m loadtests.experiments.decode_fairness --models models --model digits
    python -m loadtests.experiments.decode_fairness --models models --model digits --whole-request

In-process engine (no server): two requests of ``--images`` PNGs of ``--side``² pixels start,
then one one-image request; prints how long the small one took and how much later the large ones
finished. ``--whole-request`` decodes each request as one pool task, as the engine did before
``service.decoding.FairDecoder``, for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import time
from concurrent.futures import Executor
from pathlib import Path

import numpy as np
from PIL import Image
from prometheus_client import CollectorRegistry

from service import decoding
from service import engine as engine_module
from service.engine import Engine
from service.settings import Settings
from service.types import InferOptions


def noise_png(side: int) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (side, side), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, "L").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def decode_all(images: list[bytes], spec: object, max_pixels: int) -> np.ndarray:
    return np.stack([decoding.decode_image(d, spec, max_pixels, i) for i, d in enumerate(images)])


class WholeRequestDecoder(decoding.FairDecoder):
    """The old decode: each request's images decoded in one pool task, no turns."""

    def __init__(
        self, executor: Executor, tasks_per_request: int, max_request_pixels: int, max_pixels: int
    ) -> None:
        super().__init__(executor, tasks_per_request, max_request_pixels, max_pixels)
        self.pool, self.max_pixels = executor, max_pixels

    async def decode(self, images: list[bytes], spec: object) -> np.ndarray:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, decode_all, images, spec, self.max_pixels)


async def measure(args: argparse.Namespace) -> None:
    settings = Settings(
        models=args.models,
        providers=["CPUExecutionProvider"],
        poll_interval_s=0,
        warmup_batch_sizes=[1],
        _env_file=None,
    )
    engine = Engine(settings, registry=CollectorRegistry())
    await engine.start()
    large, small = [noise_png(args.side)] * args.images, [noise_png(16)]
    options = InferOptions()
    try:
        for _ in range(args.reps):
            big = [
                asyncio.ensure_future(
                    engine.classify_images(args.model, None, large, options, protocol="http")
                )
                for _ in range(2)
            ]
            await asyncio.sleep(0.05)
            t0 = time.perf_counter()
            await engine.classify_images(args.model, None, small, options, protocol="http")
            t1 = time.perf_counter()
            await asyncio.gather(*big)
            t2 = time.perf_counter()
            print(
                f"small request {1e3 * (t1 - t0):.0f} ms; "
                f"the large ones finished {1e3 * (t2 - t1):.0f} ms after it"
            )
    finally:
        await engine.stop()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", type=Path, default=Path("models"))
    p.add_argument("--model", default="digits")
    p.add_argument("--images", type=int, default=24, help="images per large request")
    p.add_argument("--side", type=int, default=2000, help="side of each large image, pixels")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--whole-request", action="store_true", help="the old one-task decode")
    args = p.parse_args(argv)
    if args.whole_request:
        engine_module.FairDecoder = WholeRequestDecoder  # the engine builds its decoder from it
    asyncio.run(measure(args))


if __name__ == "__main__":
    main()
