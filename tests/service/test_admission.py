"""Admission before decoding, the per-request pixel budget, and decoding shared between requests."""

from __future__ import annotations

import asyncio
import io
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from PIL import Image

from service.batching import AdaptiveBatcher, BatchPolicy
from service.engine import Engine
from service.errors import InvalidInput, PayloadTooLarge, QueueFull
from service.grpc.generated import grpc_predict_v2_pb2 as pb
from service.grpc.generated import grpc_predict_v2_pb2_grpc as pb_grpc
from service.types import InferOptions
from tests.helpers.models import encode, image_pixels
from tests.helpers.servers import GrpcFixture

pytestmark = pytest.mark.anyio


def _batcher(pool: ThreadPoolExecutor, queue: int) -> AdaptiveBatcher:
    return AdaptiveBatcher("t v1", lambda x: x[:, 0, 0, :1], pool, BatchPolicy(4, 0.001, queue, 1))


async def test_reserved_images_count_against_the_queue() -> None:
    with ThreadPoolExecutor(1) as pool:
        b = _batcher(pool, queue=4)
        held = b.reserve(3)  # three images still decoding
        with pytest.raises(QueueFull):
            b.reserve(2)
        held.release()
        held.release()  # idempotent: room is given back once
        assert await b.submit(np.ones((4, 2, 2, 1), np.float32)) is not None


async def test_request_larger_than_the_queue_is_invalid_not_retry_later() -> None:
    with ThreadPoolExecutor(1) as pool:
        b = _batcher(pool, queue=4)
        for attempt in (lambda: b.reserve(5), lambda: b.submit(np.ones((5, 2, 2, 1), np.float32))):
            with pytest.raises(InvalidInput, match="more images than this server can ever queue"):
                attempt()


def _noise_png(side: int) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (side, side), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, "L").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


async def test_small_request_finishes_while_large_ones_decode(make_settings, registry) -> None:
    # one decode thread: with whole-request decode tasks the small one would queue behind both
    engine = Engine(make_settings(inference_threads=1), registry=registry)
    await engine.start()
    try:
        large = [_noise_png(1200)] * 24
        small = [encode(image_pixels("top"))]
        finished: list[str] = []

        async def call(name: str, images: list[bytes]) -> None:
            await engine.classify_images("tiny", None, images, InferOptions(), protocol="http")
            finished.append(name)

        first = asyncio.ensure_future(call("large-1", large))
        second = asyncio.ensure_future(call("large-2", large))
        await asyncio.sleep(0)  # both large requests are in the decode pool before the small
        await call("small", small)
        await asyncio.gather(first, second)
        assert finished[0] == "small"
    finally:
        await engine.stop()


async def test_pixel_budget_refuses_before_decoding(make_settings, registry) -> None:
    engine = Engine(make_settings(max_request_pixels=3 * 64), registry=registry)
    await engine.start()
    try:
        images = [encode(image_pixels("top"))] * 4  # 4 x 8x8 = 256 pixels
        with pytest.raises(PayloadTooLarge, match="VISOR_MAX_REQUEST_PIXELS"):
            await engine.classify_images("tiny", None, images, InferOptions(), protocol="http")
        ok = await engine.classify_images("tiny", None, images[:3], InferOptions(), protocol="http")
        assert len(ok.predicted) == 3
    finally:
        await engine.stop()


def test_oversized_request_is_invalid_argument_over_grpc(make_settings, registry) -> None:
    fx = GrpcFixture(make_settings(max_queue_size=4), registry)
    try:
        with grpc.insecure_channel(fx.url) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            for n in (5, 4):
                req = pb.ModelInferRequest(model_name="tiny")
                req.inputs.add(name="image", datatype="UINT8", shape=[n, 8, 8, 1])
                req.raw_input_contents.append(np.zeros((n, 8, 8, 1), np.uint8).tobytes())
                if n == 5:
                    with pytest.raises(grpc.RpcError) as err:
                        stub.ModelInfer(req, timeout=20)
                    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                    assert "can ever queue" in err.value.details()
                else:  # the server keeps serving, and a request that fits is answered
                    assert stub.ModelInfer(req, timeout=20).model_name == "tiny"
    finally:
        fx.stop(0)
