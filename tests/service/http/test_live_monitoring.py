"""Live verification end to end: a real server (HTTP + gRPC) serving the trained digits model
answers with request ids, takes feedback over both protocols, and /metrics shows the live
precision/recall (with their bounds) and drift that the answers and ground truth imply."""

from __future__ import annotations

import base64
import json
import math
import shutil
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from prometheus_client.parser import text_string_to_metric_families
from scipy.stats import beta

from contract.metadata import load_metadata
from service.decoding import decode_image
from service.grpc.generated import grpc_predict_v2_pb2 as pb
from service.grpc.generated import grpc_predict_v2_pb2_grpc as pb_grpc
from service.grpc.generated import visor_ext_pb2 as ext
from service.grpc.generated import visor_ext_pb2_grpc as ext_grpc
from tests.helpers.servers import HTTP, Server, start_server

EDGES = np.linspace(0.0, 1.0, 11)


def _reference(version_dir: Path, images: list[bytes]) -> dict:
    """What training stores for drift: top-1 label shares and top-1 confidence histogram."""
    meta = load_metadata(version_dir)
    pixels = np.stack([decode_image(im, meta.input, 10**8) for im in images]).astype(np.float32)
    session = ort.InferenceSession(
        str(version_dir / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    probs = session.run([meta.output.name], {meta.input.name: pixels})[0]
    top1 = probs.argmax(axis=1)
    shares = np.bincount(top1, minlength=len(meta.labels)) / len(top1)
    hist = np.histogram(probs.max(axis=1), EDGES)[0] / len(top1)
    return {
        "split": "validation",
        "samples": len(top1),
        "label_distribution": dict(zip(meta.labels, shares.tolist(), strict=True)),
        "confidence": {"edges": EDGES.tolist(), "fractions": hist.tolist()},
    }


@pytest.fixture(scope="module")
def data(digits_repo: Path) -> dict[str, list[Path]]:
    root = digits_repo.parent / "data"
    return {d.name: sorted(d.glob("*.png")) for d in sorted(root.iterdir()) if d.is_dir()}


def _models(work: Path, digits_repo: Path, data: dict[str, list[Path]]) -> Path:
    """A copy of the digits repository whose version carries a drift reference."""
    models = work / "models"
    shutil.copytree(digits_repo / "digits", models / "digits")
    version_dir = models / "digits" / "1"
    sample = [p.read_bytes() for paths in data.values() for p in paths[-20:]]
    meta = json.loads((version_dir / "metadata.json").read_text())
    meta["reference"] = _reference(version_dir, sample)  # additive: metadata.json has no sha
    (version_dir / "metadata.json").write_text(json.dumps(meta))
    return models


@pytest.fixture(scope="module")
def live_server(
    digits_repo: Path, data: dict[str, list[Path]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("live")
    models = _models(work, digits_repo, data)
    # One worker: each worker exports its own live gauges (label pid), read here as one.
    server = start_server(work, models, drift_min_samples=5, drift_refresh_every=1, workers=1)
    yield server
    server.stop()


def _samples(server: Server) -> list:
    text = HTTP.get(f"{server.http}/metrics").text
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def _gauge(samples: list, name: str, **labels: str) -> float:
    """The one sample ``name`` with ``labels`` (any pid: this server has one worker)."""
    want = {"model": "digits", "version": "1", **labels}
    values = [
        s.value
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in want.items())
    ]
    assert len(values) == 1, f"{name}{want}: {values}"
    return values[0]


def _psi(expected: np.ndarray, observed: np.ndarray) -> float:
    e = np.maximum(expected / expected.sum(), 1e-4)
    o = np.maximum(observed / observed.sum(), 1e-4)
    return float(np.sum((o - e) * np.log(o / e)))


def test_predictions_feedback_and_live_gauges_over_http_and_grpc(
    live_server: Server, data: dict[str, list[Path]]
) -> None:
    labels = sorted(data)
    http_truth = labels + labels[:2]  # 12 images over HTTP
    grpc_truth = labels[2:10]  # 8 over gRPC
    http_images = [data[t][i % 3].read_bytes() for i, t in enumerate(http_truth)]
    grpc_images = [data[t][3].read_bytes() for t in grpc_truth]

    body = {"images": [base64.b64encode(i).decode() for i in http_images]}
    answer = HTTP.post(f"{live_server.http}/classify", json=body).json()
    http_id = answer["request_id"]
    assert http_id
    served = [p["labels"] for p in answer["predictions"]]
    probs = [[p["probabilities"][x] for x in labels] for p in answer["predictions"]]

    request = pb.ModelInferRequest(model_name="digits")
    request.inputs.add(name="images", datatype="BYTES", shape=[len(grpc_images)])
    request.inputs[0].contents.bytes_contents.extend(grpc_images)
    with grpc.insecure_channel(live_server.grpc) as channel:
        reply = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
        grpc_id = reply.parameters["request_id"].string_param
        assert reply.id == grpc_id and grpc_id not in ("", http_id)
        outputs = {o.name: i for i, o in enumerate(reply.outputs)}
        served += [
            [x for x in b.decode().split(",") if x]
            for b in reply.outputs[outputs["labels"]].contents.bytes_contents
        ]
        grpc_probs = reply.outputs[outputs["probabilities"]].contents.fp32_contents
        probs += np.asarray(grpc_probs, np.float32).reshape(len(grpc_images), -1).tolist()
        feedback = ext_grpc.FeedbackStub(channel)
        done = feedback.SendFeedback(ext.FeedbackRequest(request_id=grpc_id, labels=grpc_truth))
        assert (done.model_name, done.model_version, done.accepted) == ("digits", "1", 8)
        for bad, code in (
            (ext.FeedbackRequest(request_id="f" * 32, labels=["1"]), grpc.StatusCode.NOT_FOUND),
            (ext.FeedbackRequest(request_id=grpc_id, labels=["x"], index=0), "INVALID_ARGUMENT"),
            (ext.FeedbackRequest(request_id=grpc_id, labels=["3"], index=0), "ALREADY_EXISTS"),
        ):
            with pytest.raises(grpc.RpcError) as err:
                feedback.SendFeedback(bad)
            assert err.value.code().name == getattr(code, "name", code), err.value.details()

    sent = HTTP.post(
        f"{live_server.http}/feedback", json={"request_id": http_id, "labels": http_truth}
    )
    assert sent.status_code == 200, sent.text
    assert sent.json() == {"request_id": http_id, "model": "digits", "version": 1, "accepted": 12}
    for bad, status, words in (
        ({"request_id": "nope", "labels": ["1"]}, 404, "was not issued by this model server"),
        ({"request_id": http_id, "labels": ["1"]}, 400, "1 labels for a request of 12"),
        ({"request_id": http_id, "labels": ["11"], "index": 0}, 400, "not one of the model's"),
        ({"request_id": http_id, "labels": ["0"], "index": 0}, 409, "already recorded"),
        ({"labels": ["1"]}, 400, "'request_id' is required"),
    ):
        r = HTTP.post(f"{live_server.http}/feedback", json=bad)
        assert r.status_code == status and words in r.json()["error"], r.text

    # What the answers and the truth imply, computed here from the answers alone.
    truth = http_truth + grpc_truth
    samples = _samples(live_server)
    assert _gauge(samples, "visor_live_feedback_total") == 20
    checked = 0
    for label in labels:
        predicted = sum(label in s for s in served)
        tp = sum(label in s and t == label for s, t in zip(served, truth, strict=True))
        actual = truth.count(label)
        if predicted:
            assert _gauge(samples, "visor_live_precision", label=label) == tp / predicted
            bound = beta.ppf(0.05, tp, predicted - tp + 1) if tp else 0.0
            got = _gauge(samples, "visor_live_precision_lower_bound", label=label)
            assert got == pytest.approx(bound, abs=1e-9)
            checked += 1
        assert _gauge(samples, "visor_live_recall", label=label) == tp / actual
        bound = beta.ppf(0.05, tp, actual - tp + 1) if tp else 0.0
        got = _gauge(samples, "visor_live_recall_lower_bound", label=label)
        assert got == pytest.approx(bound, abs=1e-9)
    assert checked >= 5, f"the model predicted too few labels: {served}"

    reference = json.loads((live_server.log.parent / "models/digits/1/metadata.json").read_text())
    ref = reference["reference"]
    p = np.asarray(probs)
    top1 = np.bincount(p.argmax(axis=1), minlength=len(labels))
    expected_label_share = np.array([ref["label_distribution"][x] for x in labels])
    conf = np.histogram(np.clip(p.max(axis=1), 0, 1), EDGES)[0]
    assert _gauge(samples, "visor_drift_samples") == 20
    assert _gauge(samples, "visor_drift_psi", kind="label") == pytest.approx(
        _psi(expected_label_share, top1), rel=1e-6
    )
    assert _gauge(samples, "visor_drift_psi", kind="confidence") == pytest.approx(
        _psi(np.asarray(ref["confidence"]["fractions"]), conf), rel=1e-4
    )
    assert _gauge(samples, "visor_live_target", metric="confidence") == 0.95
    assert not math.isnan(_gauge(samples, "visor_live_target", metric="precision"))


def test_reflection_lists_the_feedback_service(live_server: Server) -> None:
    with grpc.insecure_channel(live_server.grpc) as channel:
        services = ProtoReflectionDescriptorDatabase(channel).get_services()
    assert "visor.v1.Feedback" in services and "inference.GRPCInferenceService" in services


def test_rest_v2_and_grpc_ids_the_client_chose_are_kept(
    live_server: Server, data: dict[str, list[Path]]
) -> None:
    png = base64.b64encode(data["5"][4].read_bytes()).decode()
    infer = f"{live_server.http}/v2/models/digits/infer"
    tensor = {"name": "images", "datatype": "BYTES", "shape": [1], "data": [png]}
    plain = HTTP.post(infer, json={"inputs": [tensor]}).json()
    assert plain["id"] == plain["parameters"]["request_id"] and plain["id"]
    named = HTTP.post(infer, json={"id": "mine", "inputs": [tensor]}).json()
    assert named["id"] == "mine" and named["parameters"]["request_id"] not in ("mine", plain["id"])
    sent = HTTP.post(
        f"{live_server.http}/feedback",
        json={"request_id": named["parameters"]["request_id"], "labels": ["5"]},
    )
    assert sent.status_code == 200 and sent.json()["accepted"] == 1, sent.text

    request = pb.ModelInferRequest(model_name="digits", id="client-7")
    request.inputs.add(name="images", datatype="BYTES", shape=[1])
    request.inputs[0].contents.bytes_contents.append(data["5"][5].read_bytes())
    with grpc.insecure_channel(live_server.grpc) as channel:
        reply = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
        server_id = reply.parameters["request_id"].string_param
        assert reply.id == "client-7" and server_id not in ("", "client-7")
        done = ext_grpc.FeedbackStub(channel).SendFeedback(
            ext.FeedbackRequest(request_id=server_id, labels=["5"], index=0)
        )
    assert done.accepted == 1


# --- a fleet: two replicas, no affinity, one restarted ----------------------------------------

FLEET_KEY = "a key every replica shares"


def _classify(server: Server, images: list[bytes], wire: str) -> tuple[str, list[list[str]], list]:
    """(request id, thresholded labels per image, probabilities per image) over ``wire``."""
    if wire == "http":
        body = {"images": [base64.b64encode(i).decode() for i in images]}
        answer = HTTP.post(f"{server.http}/classify", json=body).json()
        predictions = answer["predictions"]
        labels = sorted(predictions[0]["probabilities"])
        probs = [[p["probabilities"][x] for x in labels] for p in predictions]
        return answer["request_id"], [p["labels"] for p in predictions], probs
    request = pb.ModelInferRequest(model_name="digits")
    request.inputs.add(name="images", datatype="BYTES", shape=[len(images)])
    request.inputs[0].contents.bytes_contents.extend(images)
    with grpc.insecure_channel(server.grpc) as channel:
        reply = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
    outputs = {o.name: i for i, o in enumerate(reply.outputs)}
    served = [
        [x for x in b.decode().split(",") if x]
        for b in reply.outputs[outputs["labels"]].contents.bytes_contents
    ]
    probs = reply.outputs[outputs["probabilities"]].contents.fp32_contents
    probs = np.asarray(probs, np.float32).reshape(len(images), -1).tolist()
    return reply.parameters["request_id"].string_param, served, probs


def _feedback(server: Server, request_id: str, truth: list[str], wire: str) -> int:
    """Images accepted; a refusal fails the test with the server's message."""
    if wire == "http":
        sent = HTTP.post(
            f"{server.http}/feedback", json={"request_id": request_id, "labels": truth}
        )
        assert sent.status_code == 200, sent.text
        return sent.json()["accepted"]
    with grpc.insecure_channel(server.grpc) as channel:
        done = ext_grpc.FeedbackStub(channel).SendFeedback(
            ext.FeedbackRequest(request_id=request_id, labels=truth)
        )
    return done.accepted


def _sums(scrapes: list[list], name: str, *keys: str) -> dict[tuple[str, ...], float]:
    """``name`` summed over replicas and workers by ``keys``, as ``sum by (keys)`` would."""
    total: dict[tuple[str, ...], float] = {}
    for samples in scrapes:
        for s in samples:
            if s.name == name and s.labels.get("model") == "digits":
                key = tuple(s.labels[k] for k in keys)
                total[key] = total.get(key, 0.0) + s.value
    return total


def test_any_replica_takes_feedback_and_the_counters_sum_over_the_fleet(
    digits_repo: Path, data: dict[str, list[Path]], tmp_path: Path
) -> None:
    models = _models(tmp_path, digits_repo, data)

    def replica(name: str, workers: int) -> Server:
        (tmp_path / name).mkdir()
        return start_server(
            tmp_path / name,
            models,
            workers=workers,
            feedback_keys=f"{FLEET_KEY},an older key",
            drift_refresh_every=1,  # the drift counters are added to at each refresh
        )

    fleet = [replica("a", 1), replica("b", 2)]
    scrapes: list[list] = []
    try:
        labels = sorted(data)
        answered: list[tuple[int, str, list[list[str]], list[str]]] = []
        probs: list = []
        for i in range(24):  # round robin, both wires, 1-3 images per request
            truth = [labels[(i * 3 + j) % 10] for j in range(1 + i % 3)]
            images = [data[t][(i + j) % 5].read_bytes() for j, t in enumerate(truth)]
            rid, served, p = _classify(fleet[i % 2], images, ("http", "grpc")[i // 2 % 2])
            answered.append((i % 2, rid, served, truth))
            probs += p
        # The first half's feedback goes to the replica that did NOT answer.
        for i, (by, rid, _, truth) in enumerate(answered[:12]):
            assert _feedback(fleet[1 - by], rid, truth, ("grpc", "http")[i % 2]) == len(truth)
        tampered = answered[0][1][:-6] + ("AAAAAA" if answered[0][1][-6:] != "AAAAAA" else "BBBBBB")
        r = HTTP.post(f"{fleet[0].http}/feedback", json={"request_id": tampered, "labels": ["1"]})
        assert r.status_code == 404 and "not issued by this model server" in r.text, r.text
        again = HTTP.post(
            f"{fleet[0].http}/feedback",
            json={"request_id": answered[1][1], "labels": answered[1][3]},
        )
        assert again.status_code == 409, again.text  # answered by b, counted once on a
        # Replica b restarts (its counters restart from 0, as Prometheus's increase() expects)
        # and still takes feedback for what it answered before.
        scrapes.append(_samples(fleet[1]))
        fleet[1].stop()
        fleet[1] = replica("b-again", 1)
        for i, (_, rid, _, truth) in enumerate(answered[12:]):
            assert _feedback(fleet[1], rid, truth, ("grpc", "http")[i % 2]) == len(truth)
        scrapes += [_samples(server) for server in fleet]
    finally:
        for server in fleet:
            server.stop()

    # What the answers and the truth imply, per class, one-vs-rest at the served thresholds.
    expected: dict[tuple[str, str], float] = {}
    for _, _, served, truth in answered:
        for predicted, t in zip(served, truth, strict=True):
            for label in predicted:
                key = (label, "tp" if label == t else "fp")
                expected[key] = expected.get(key, 0) + 1
            if t not in predicted:
                expected[(t, "fn")] = expected.get((t, "fn"), 0) + 1
    outcomes = _sums(scrapes, "visor_live_outcomes_total", "label", "outcome")
    assert {k: v for k, v in outcomes.items() if v} == expected
    assert sum(_sums(scrapes, "visor_live_feedback_total").values()) == len(probs)
    # Drift: served top-1 labels and confidence bins, summed, against the answers'.
    p = np.asarray(probs)
    top1 = np.bincount(p.argmax(axis=1), minlength=len(labels))
    served_labels = _sums(scrapes, "visor_drift_served_total", "kind", "bucket")
    assert [served_labels[("label", x)] for x in labels] == top1.tolist()
    conf = np.histogram(np.clip(p.max(axis=1), 0, 1), EDGES)[0]
    bins = [f"{lo:g}-{hi:g}" for lo, hi in pairwise(EDGES)]
    assert [served_labels[("confidence", b)] for b in bins] == conf.tolist()
