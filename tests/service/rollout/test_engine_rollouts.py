"""Rollouts in the engine, on the tiny ONNX model: routing per policy, shadow off the request path,
rollout.yaml mistakes, and two engines (two processes' worth) pooling evidence in one ledger."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from service.engine import Engine
from service.types import InferOptions
from tests.helpers.models import LABELS, encode, image_pixels, write_version
from tests.helpers.servers import hold_batches

pytestmark = pytest.mark.anyio

KINDS = ("top", "bottom", "left")


@pytest.fixture
def repo(model_repo: Path) -> Path:
    write_version(model_repo, "tiny", 2)  # the same weights: a candidate equal to v1
    return model_repo


def rollout(repo: Path, **spec: object) -> None:
    (repo / "tiny" / "rollout.yaml").write_text(json.dumps(spec))  # JSON is YAML


async def started(make_settings, registry=None, **overrides) -> Engine:
    engine = Engine(make_settings(**overrides), registry=registry or CollectorRegistry())
    await engine.start()
    return engine


async def ask(engine: Engine, kind: str = "top", version: int | None = None):
    pixels = image_pixels(kind)[None]
    return await engine.classify_array("tiny", version, pixels, InferOptions(), protocol="grpc")


async def test_without_rollout_yaml_the_newest_version_answers(repo, make_settings) -> None:
    engine = await started(make_settings)
    try:
        assert (await ask(engine)).version == 2
        assert engine.rollouts.views(["tiny"]) == {}
        assert engine.model_metadata("tiny")["rollout"] is None
    finally:
        await engine.stop()


async def test_canary_gives_the_candidate_exactly_its_share(repo, make_settings) -> None:
    rollout(repo, policy="canary", share=0.25, current=1, candidate=2)
    engine = await started(make_settings)
    try:
        versions = [(await ask(engine)).version for _ in range(40)]
        assert versions.count(2) == 10 and versions.count(1) == 30
        # every prefix: never more than its share, rounded up
        assert all(versions[:n].count(2) <= -(-n // 4) for n in range(1, 41))
        assert (await ask(engine, version=2)).version == 2  # a named version is still served
        view = engine.rollouts.view("tiny")
        assert view["state"] == "evaluating" and view["share"] == 0.25
        assert (view["current"], view["candidate"]) == (1, 2)
    finally:
        await engine.stop()


async def test_shadow_answers_never_wait_for_the_candidate(repo, make_settings) -> None:
    rollout(repo, policy="shadow", current=1, candidate=2)
    engine = await started(make_settings)
    try:
        gate, entered = hold_batches(engine.repository.serving["tiny"][2])
        results = [await ask(engine, kind) for kind in KINDS]
        # all three answered by v1 while the candidate's first batch is still held
        assert [r.version for r in results] == [1, 1, 1]
        assert await asyncio.to_thread(entered.wait, 10) and not gate.is_set()
        gate.set()
        for _ in range(200):
            await asyncio.sleep(0.02)
            if engine.rollouts.active["tiny"].own.compared == 3:
                break
        own = engine.rollouts.active["tiny"].own
        assert (own.compared, own.agree_top1, own.agree_labels) == (3, 3, 3)
        # feedback on v1's answers counts for both: the candidate's shadow answer is kept
        for r, kind in zip(results, KINDS, strict=True):
            await engine.feedback(r.request_id, [kind])
        counts = engine.rollouts.active["tiny"].own.counts
        assert counts["current"].tp.tolist() == counts["candidate"].tp.tolist() == [1, 1, 1]
        assert engine.rollouts.view("tiny")["evidence"]["agreement"]["top1"] == 1.0
    finally:
        gate.set()
        await engine.stop()


async def test_a_bad_rollout_yaml_changes_nothing_and_says_why(repo, make_settings) -> None:
    (repo / "tiny" / "rollout.yaml").write_text("policy: canery\nshare: 2\n")
    engine = await started(make_settings)
    try:
        view = engine.rollouts.view("tiny")
        assert "rollout.yaml" in view["problem"] and "policy" in view["problem"]
        assert "share" in view["problem"]
        assert (await ask(engine)).version == 2  # as without the file
        rollout(repo, policy="canary", share=1.0, current=1, candidate=2)
        await engine.repository.sync()
        assert (await ask(engine)).version == 2 and engine.rollouts.view("tiny")["problem"] is None
        rollout(repo, policy="canary", current=1, candidate=7)
        await engine.repository.sync()
        assert engine.rollouts.view("tiny")["problem"] == (
            "v7 not in the repository: the rollout waits for it"
        )
        assert (await ask(engine)).version == 1  # the current version, not the newest
        (repo / "tiny" / "rollout.yaml").write_text("[1, 2")
        await engine.repository.sync()
        assert "not YAML" in engine.rollouts.view("tiny")["problem"]
        assert engine.rollouts.view("tiny")["policy"] == "canary"  # the last valid one holds
    finally:
        await engine.stop()


async def test_two_processes_pool_evidence_and_follow_one_decision(
    repo, make_settings, tmp_path
) -> None:
    """Feedback split between two engines: neither alone has enough to decide, the pooled
    evidence does; the decision one writes, the other reads and follows."""
    rollout(repo, policy="canary", share=0.5, current=1, candidate=2, min_feedback=1000)
    state = tmp_path / "state"
    a = await started(make_settings, rollout_state=str(state))
    b = await started(make_settings, rollout_state=str(state))
    try:
        for engine in (a, b):
            for _ in range(4):  # canary at 0.5 alternates: two answers of each version
                r = await ask(engine, "top")
                # the candidate's answers are reported wrong, the current's right: 2 against 2
                # is not enough at 0.95 (Bonferroni over 3 classes + overall), 4 against 4 is
                await engine.feedback(r.request_id, ["top" if r.version == 1 else "left"])
        for engine in (a, b):
            assert engine.rollouts.active["tiny"].state == "evaluating"
            assert engine.rollouts.active["tiny"].verdict.action == "wait"
        await a.rollouts.sync()
        await b.rollouts.sync()  # b sees a's evidence: together enough to decide
        assert b.rollouts.active["tiny"].state == "rolled_back"
        await b.rollouts.sync()  # written for the fleet
        await a.rollouts.sync()
        assert a.rollouts.active["tiny"].state == "rolled_back"
        decision = a.rollouts.view("tiny")["decision"]
        assert decision["action"] == "roll_back" and decision["by"] == b.rollouts.ledger.process
        assert [(await ask(a)).version for _ in range(6)] == [1] * 6
        files = sorted(p.name for p in (state / "tiny" / "1-2").iterdir())
        assert sum(f.startswith("evidence-") for f in files) == 2
        assert sum(f.startswith("decision-") for f in files) == 1
        evidence = a.rollouts.view("tiny")["evidence"]
        assert evidence["feedback"] == {"current": 4, "candidate": 4}
    finally:
        await a.stop()
        await b.stop()
    # a restarted process starts from the decision
    c = await started(make_settings, rollout_state=str(state))
    try:
        assert c.rollouts.active["tiny"].state == "rolled_back"
        assert (await ask(c)).version == 1
    finally:
        await c.stop()


async def test_without_a_shared_state_each_process_decides_alone(repo, make_settings) -> None:
    rollout(repo, policy="canary", share=0.5, current=1, candidate=2, min_feedback=1000)
    engine = await started(make_settings, rollout_state="none")
    try:
        for _ in range(30):
            r = await ask(engine, "top")
            await engine.feedback(r.request_id, ["top" if r.version == 1 else "left"])
            if engine.rollouts.active["tiny"].state == "rolled_back":
                break
        view = engine.rollouts.view("tiny")
        assert view["state"] == "rolled_back" and view["shared"] is False
        assert np.isclose(view["evidence"]["overall"]["candidate"], 0.0)
        assert not (repo / ".rollout").exists()
    finally:
        await engine.stop()


def test_labels_list_is_the_tiny_models() -> None:
    assert LABELS == list(KINDS)


async def test_auto_false_reports_the_verdict_and_changes_nothing(repo, make_settings) -> None:
    rollout(repo, policy="canary", share=0.5, current=1, candidate=2, auto=False)
    engine = await started(make_settings, rollout_state="none")
    try:
        for _ in range(20):
            r = await ask(engine, "top")
            await engine.feedback(r.request_id, ["top" if r.version == 1 else "left"])
        view = engine.rollouts.view("tiny")
        assert view["verdict"]["action"] == "roll_back" and view["state"] == "evaluating"
        assert view["decision"] is None
        assert sorted({(await ask(engine)).version for _ in range(4)}) == [1, 2]  # still split
    finally:
        await engine.stop()


async def test_a_request_whose_version_goes_while_it_decodes_is_routed_and_counted_once(
    repo, make_settings
) -> None:
    # canary at one half: request 0 goes to v1, request 1 to the candidate v2. Request 1's
    # images are held in decoding while v2 leaves the repository; it is answered by v1, and
    # the rollout counts it once (a second count would skew the canary's share and totals).
    rollout(repo, policy="canary", share=0.5, current=1, candidate=2)
    registry = CollectorRegistry()
    engine = await started(make_settings, registry=registry)
    decode, entered, gate = engine._decoder.decode, asyncio.Event(), asyncio.Event()

    async def held(images, spec):
        entered.set()
        await gate.wait()
        return await decode(images, spec)

    def answered(role: str) -> float:
        sample = registry.get_sample_value(
            "visor_rollout_answered_total", {"model": "tiny", "role": role}
        )
        return sample or 0.0

    try:
        assert (await ask(engine)).version == 1
        engine._decoder.decode = held
        pending = asyncio.create_task(
            engine.classify_images(
                "tiny", None, [encode(image_pixels("left"))], InferOptions(), protocol="grpc"
            )
        )
        await asyncio.wait_for(entered.wait(), 10)
        assert (answered("current"), answered("candidate")) == (1, 1)
        shutil.rmtree(repo / "tiny" / "2")
        await engine.repository.sync()
        assert 2 not in engine.repository.serving["tiny"]
        gate.set()
        result = await asyncio.wait_for(pending, 10)
        assert result.version == 1 and result.labels[result.probabilities[0].argmax()] == "left"
        assert (answered("current"), answered("candidate")) == (1, 1)
        assert engine.rollouts.active["tiny"]._served == 2
    finally:
        gate.set()
        await engine.stop()
