"""The engine end to end on the tiny ONNX model: lookup, classify, options, errors, metrics."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from service.engine import Engine
from service.errors import InvalidInput, ModelNotFound, ModelUnavailable
from service.types import InferOptions, ModelStatus
from tests.helpers.models import LABELS, encode, image_pixels, reference_probabilities

pytestmark = pytest.mark.anyio


@pytest.fixture
async def engine(make_settings, registry):
    eng = Engine(make_settings(), registry=registry)
    await eng.start()
    yield eng
    await eng.stop()


async def test_start_loads_and_reports_ready(engine: Engine) -> None:
    assert engine.live and engine.ready
    infos = {(i.name, i.version): i for i in engine.models()}
    assert set(infos) == {("tiny", 1), ("tiny_logits", 1)}
    info = engine.model_info("tiny")
    assert info.status is ModelStatus.READY and info.device == "CPUExecutionProvider"
    assert info.labels == LABELS and engine.model_ready("tiny", "1")


@pytest.mark.parametrize("model", ["tiny", "tiny_logits"])
async def test_classify_array_matches_reference(engine: Engine, model: str) -> None:
    pixels = np.stack([image_pixels(k) for k in ("top", "bottom", "left", "none")])
    result = await engine.classify_array(
        model, None, pixels, InferOptions(top_k=2), protocol="grpc"
    )
    np.testing.assert_allclose(result.probabilities, reference_probabilities(pixels), atol=1e-5)
    assert [row[0].label for row in result.top_k] == ["top", "bottom", "left", "top"]
    assert result.predicted[:3] == [["top"], ["bottom"], ["left"]]
    assert result.predicted[3] == []  # uniform 1/3 < calibrated 0.5
    assert result.threshold_source == "calibrated"


async def test_classify_images_decodes_each_format(engine: Engine) -> None:
    images = [encode(image_pixels("bottom"), fmt) for fmt in ("PNG", "JPEG", "BMP", "GIF", "WEBP")]
    result = await engine.classify_images("tiny", 1, images, InferOptions(), protocol="http")
    assert [p[0] for p in result.predicted] == ["bottom"] * 5


async def test_options_and_ground_truth(engine: Engine) -> None:
    pixels = np.stack([image_pixels("top"), image_pixels("left")])
    low = await engine.classify_array(
        "tiny", None, pixels, InferOptions(threshold=0.0), protocol="grpc"
    )
    assert all(len(p) == 3 for p in low.predicted)
    tp = await engine.classify_array(
        "tiny", None, pixels, InferOptions(target_precision=0.8), protocol="grpc"
    )
    # the fixture curve reaches precision 0.8 first at threshold 0.7
    np.testing.assert_allclose(tp.thresholds, [0.7] * 3, atol=1e-6)
    tr = await engine.classify_array(
        "tiny", None, pixels, InferOptions(target_recall=0.75), protocol="grpc"
    )
    np.testing.assert_allclose(tr.thresholds, [0.3] * 3, atol=1e-6)  # recall 0.8 at 0.3
    gt = await engine.classify_array(
        "tiny", None, pixels, InferOptions(ground_truth=["top", "bottom"]), protocol="grpc"
    )
    assert gt.metrics is not None and gt.metrics.accuracy == 0.5
    assert gt.metrics.per_class["top"].precision == 1.0
    assert gt.metrics.per_class["bottom"].recall == 0.0


@pytest.mark.parametrize(
    ("call", "error"),
    [
        ({"name": "nope"}, ModelNotFound),
        ({"version": "7"}, ModelNotFound),
        ({"version": "x"}, InvalidInput),  # malformed: 400 on every wire
        ({"pixels": np.zeros((1, 8, 8, 3), np.uint8)}, InvalidInput),
        ({"pixels": np.zeros((1, 8, 8, 1), np.int32)}, InvalidInput),
        ({"pixels": np.zeros((0, 8, 8, 1), np.uint8)}, InvalidInput),
        ({"pixels": np.full((1, 8, 8, 1), np.nan, np.float32)}, InvalidInput),
        ({"pixels": np.zeros((300, 8, 8, 1), np.uint8)}, InvalidInput),
        ({"options": InferOptions(threshold=1.5)}, InvalidInput),
        ({"options": InferOptions(threshold=[0.5, 0.5])}, InvalidInput),
        ({"options": InferOptions(target_precision=0.9, target_recall=0.9)}, InvalidInput),
        ({"options": InferOptions(top_k=0)}, InvalidInput),
        ({"options": InferOptions(ground_truth=["cat"])}, InvalidInput),
    ],
)
async def test_bad_requests_are_typed_then_service_is_healthy(engine: Engine, call, error) -> None:
    args = {
        "name": "tiny",
        "version": None,
        "pixels": np.zeros((1, 8, 8, 1), np.uint8),
        "options": InferOptions(),
    }
    args.update(call)
    with pytest.raises(error):
        await engine.classify_array(
            args["name"], args["version"], args["pixels"], args["options"], protocol="grpc"
        )
    ok = await engine.classify_array(
        "tiny", None, np.zeros((1, 8, 8, 1), np.uint8), InferOptions(), protocol="grpc"
    )
    assert len(ok) == 1


async def test_undecodable_image_is_invalid(engine: Engine) -> None:
    with pytest.raises(InvalidInput, match="image 1 could not be decoded"):
        await engine.classify_images(
            "tiny", None, [encode(image_pixels("top")), b"nope"], InferOptions(), protocol="http"
        )


async def test_stop_refuses_new_work(make_settings, registry) -> None:
    eng = Engine(make_settings(), registry=registry)
    await eng.start()
    await eng.stop()
    assert not eng.ready and not eng.live
    with pytest.raises(ModelUnavailable):
        await eng.classify_array(
            "tiny", None, np.zeros((1, 8, 8, 1), np.uint8), InferOptions(), protocol="grpc"
        )


async def test_metrics_count_requests(engine: Engine, registry) -> None:
    await engine.classify_array(
        "tiny", None, np.zeros((2, 8, 8, 1), np.uint8), InferOptions(), protocol="grpc"
    )
    labels = {"model": "tiny", "version": "1", "protocol": "grpc", "code": "OK"}
    assert registry.get_sample_value("visor_requests_total", labels) == 1
    assert registry.get_sample_value("visor_images_total", {"model": "tiny", "version": "1"}) == 2
    assert (
        registry.get_sample_value(
            "visor_execution_provider",
            {"model": "tiny", "version": "1", "provider": "CPUExecutionProvider"},
        )
        == 1
    )


async def test_unknown_model_names_do_not_grow_metric_labels(engine: Engine, registry) -> None:
    for name in ("a", "b", "c"):
        with pytest.raises(ModelNotFound):
            await engine.classify_array(
                name, None, np.zeros((1, 8, 8, 1), np.uint8), InferOptions(), protocol="grpc"
            )
    labels = {"model": "_unknown", "version": "", "protocol": "grpc", "code": "NOT_FOUND"}
    assert registry.get_sample_value("visor_requests_total", labels) == 3
    assert registry.get_sample_value("visor_requests_total", {**labels, "model": "a"}) is None
    with pytest.raises(ModelNotFound):
        await engine.classify_array(
            "tiny", "99", np.zeros((1, 8, 8, 1), np.uint8), InferOptions(), protocol="grpc"
        )
    labels = {"model": "tiny", "version": "_unknown", "protocol": "grpc", "code": "NOT_FOUND"}
    assert registry.get_sample_value("visor_requests_total", labels) == 1


async def test_requests_before_start_are_unavailable(make_settings, registry) -> None:
    eng = Engine(make_settings(), registry=registry)
    with pytest.raises(ModelUnavailable, match="starting"):
        await eng.classify_array(
            "tiny", None, np.zeros((1, 8, 8, 1), np.uint8), InferOptions(), protocol="grpc"
        )


def test_engine_sets_the_gil_switch_interval(make_settings, registry) -> None:
    before = sys.getswitchinterval()
    try:
        Engine(make_settings(gil_switch_interval_ms=2.5), registry=registry)
        assert sys.getswitchinterval() == pytest.approx(0.0025)
    finally:
        sys.setswitchinterval(before)


@pytest.mark.parametrize("freeze", [True, False])
def test_engine_freezes_what_is_alive_once_started(make_settings, registry, freeze) -> None:
    import asyncio
    import gc

    gc.unfreeze()
    engine = Engine(make_settings(gc_freeze=freeze), registry=registry)
    try:
        asyncio.run(engine.start())
        assert (gc.get_freeze_count() > 0) is freeze
    finally:
        asyncio.run(engine.stop())
        gc.unfreeze()
