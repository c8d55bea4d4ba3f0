"""Model repository: verification, version policy, hot reload with a bad new version."""

from __future__ import annotations

import asyncio
import json
import shutil

import numpy as np
import pytest

from contract.metadata import sha256_path
from service.engine import Engine
from service.errors import ModelUnavailable
from service.policy import VersionPolicy
from service.types import InferOptions, ModelStatus
from service.versions import batch_limit, warmup_sizes
from tests.helpers.models import image_pixels, write_version
from tests.helpers.servers import wait_for

pytestmark = pytest.mark.anyio


def test_version_policy() -> None:
    assert VersionPolicy.parse("latest:2").select([1, 3, 2]) == [3, 2]
    assert VersionPolicy.parse("all").select([1, 2]) == [2, 1]
    assert VersionPolicy.parse("specific:1,3").select([1, 2, 3]) == [1, 3]
    with pytest.raises(ValueError):
        VersionPolicy.parse("newest")


def test_warmup_sizes(make_settings) -> None:
    assert warmup_sizes(make_settings(warmup_batch_sizes=None, max_batch_size=12)) == [
        1,
        2,
        4,
        8,
        12,
    ]


def test_cpu_batch_cap_limits_batches_and_warmup(make_settings) -> None:
    settings = make_settings(warmup_batch_sizes=None, max_batch_size=32, cpu_max_batch_size=8)
    assert batch_limit(settings, "CPUExecutionProvider") == 8
    assert batch_limit(settings, "CUDAExecutionProvider") == 32
    assert warmup_sizes(settings, batch_limit(settings, "CPUExecutionProvider")) == [1, 2, 4, 8]
    small = make_settings(max_batch_size=4, cpu_max_batch_size=8)
    assert batch_limit(small, "CPUExecutionProvider") == 4


async def test_bad_checksum_and_bad_metadata_are_reported(
    model_repo, make_settings, registry
) -> None:
    write_version(model_repo, "broken", 1, bad_sha=True)
    odd = write_version(model_repo, "odd", 1)
    meta = json.loads((odd / "metadata.json").read_text())
    meta["labels"] = ["only-one"]
    (odd / "metadata.json").write_text(json.dumps(meta))
    (model_repo / "tiny" / "not-a-version").mkdir()
    engine = Engine(make_settings(), registry=registry)
    await engine.start()
    try:
        broken = engine.model_info("broken")
        assert broken.status is ModelStatus.FAILED and "sha256" in broken.reason
        assert engine.model_info("odd").status is ModelStatus.FAILED
        assert (
            registry.get_sample_value(
                "visor_model_load_failures_total", {"model": "broken", "version": "1"}
            )
            == 1
        )
        with pytest.raises(ModelUnavailable, match="sha256"):
            await engine.classify_array(
                "broken", None, image_pixels("top")[None], InferOptions(), protocol="grpc"
            )
        assert engine.model_ready("tiny")
    finally:
        await engine.stop()


async def test_hot_reload_swaps_versions_and_keeps_old_one_on_failure(
    model_repo, make_settings, registry
) -> None:
    engine = Engine(make_settings(poll_interval_s=0.05), registry=registry)
    await engine.start()
    stop = asyncio.Event()
    served: list[int] = []

    async def traffic() -> None:  # requests keep flowing during every swap
        while not stop.is_set():
            r = await engine.classify_array(
                "tiny", None, image_pixels("top")[None], InferOptions(), protocol="grpc"
            )
            served.append(r.version)
            await asyncio.sleep(0.002)

    flow = asyncio.ensure_future(traffic())
    try:
        write_version(model_repo, "tiny", 2)
        await wait_for(
            lambda: engine.model_info("tiny").version == 2 and engine.model_ready("tiny", 2)
        )
        await wait_for(lambda: ("tiny", 1) not in {(m.name, m.version) for m in engine.models()})
        write_version(model_repo, "tiny", 3, bad_sha=True)
        await wait_for(
            lambda: any(m.version == 3 and m.status is ModelStatus.FAILED for m in engine.models())
        )
        assert engine.model_ready("tiny", 2)  # the previous version keeps serving
        r = await engine.classify_array(
            "tiny", None, image_pixels("top")[None], InferOptions(), protocol="grpc"
        )
        assert r.version == 2
        fixed = json.loads((model_repo / "tiny" / "3" / "metadata.json").read_text())
        fixed["artifacts"]["onnx"]["sha256"] = sha256_path(model_repo / "tiny" / "3" / "model.onnx")
        (model_repo / "tiny" / "3" / "metadata.json").write_text(json.dumps(fixed))
        await wait_for(lambda: engine.model_ready("tiny", 3))  # retried once its files changed
        shutil.rmtree(model_repo / "tiny" / "3")
        shutil.rmtree(model_repo / "tiny" / "2")  # v1 is still there: the policy falls back to it
        await wait_for(
            lambda: engine.model_info("tiny").version == 1 and engine.model_ready("tiny")
        )
        assert not flow.done()  # no request failed during any swap
        r = await engine.classify_array(
            "tiny", None, image_pixels("top")[None], InferOptions(), protocol="grpc"
        )
        assert r.version == 1
    finally:
        stop.set()
        await asyncio.gather(flow, return_exceptions=True)
        await engine.stop()
    assert served[0] == 1 and 2 in served


async def test_logits_output_gets_softmax(make_settings, registry) -> None:
    engine = Engine(make_settings(), registry=registry)
    await engine.start()
    try:
        r = await engine.classify_array(
            "tiny_logits", None, np.zeros((1, 8, 8, 1), np.uint8), InferOptions(), protocol="grpc"
        )
        np.testing.assert_allclose(r.probabilities.sum(axis=1), 1.0, atol=1e-6)
    finally:
        await engine.stop()
