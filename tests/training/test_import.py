"""``python -m training import``: Keras models built here (not by ``train``) are imported, served
over HTTP and gRPC by a real server, and answer as Keras does; offline ``score`` agrees too."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pandas as pd
import pytest

import training  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from contract.imaging import decode_image
from contract.metadata import load_metadata
from service.grpc.generated import grpc_predict_v2_pb2 as pb
from service.grpc.generated import grpc_predict_v2_pb2_grpc as pb_grpc
from tests.helpers import ROOT
from tests.helpers.servers import HTTP, start_server
from tests.helpers.training import run_training_cli, write_classes

keras = pytest.importorskip("tf_keras")

LABELS = ["a", "b", "c"]


def _randomised(model: keras.Model, seed: int) -> keras.Model:
    """Spread-out weights so every layer matters to the comparison."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = [rng.normal(0.0, 0.3, w.shape).astype(np.float32) for w in layer.get_weights()]
        if weights:
            layer.set_weights(weights)
    return model


def gray_logits_model() -> keras.Model:
    """12x12 grayscale, trained on pixels in 0..1 (no Rescaling layer), ends in logits."""
    inputs = keras.Input((12, 12, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    x = keras.layers.Flatten()(x)
    return _randomised(keras.Model(inputs, keras.layers.Dense(3)(x)), 1)


def rgb_softmax_model() -> keras.Model:
    """10x10 RGB with its own Rescaling to -1..1 (so it takes raw pixels), ends in softmax."""
    return _randomised(
        keras.Sequential(
            [
                keras.Input((10, 10, 3)),
                keras.layers.Rescaling(1 / 127.5, offset=-1.0),
                keras.layers.Conv2D(4, 3, activation="relu"),
                keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dense(3, activation="softmax"),
            ]
        ),
        2,
    )


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("import")
    (base / "labels.txt").write_text("\n".join(LABELS) + "\n")
    gray, rgb = gray_logits_model(), rgb_softmax_model()
    gray.save(base / "gray.h5")
    rgb.save(base / "rgb_savedmodel", save_format="tf")
    calib = write_classes(base / "calib", dict.fromkeys(LABELS, 4), size=10, mode="RGB", seed=3)
    images = write_classes(base / "images", dict.fromkeys(LABELS, 2), size=17, mode="RGB", seed=4)
    common = ("--labels", str(base / "labels.txt"), "--out", str(base / "models"))
    for args in (
        ("import", str(base / "gray.h5"), "--name", "gray", "--input-range", "0,1", *common),
        (
            "import",
            str(base / "rgb_savedmodel"),
            "--name",
            "rgb",
            "--calibration-data",
            str(calib),
            "--target-recall",
            "0.5",
            *common,
        ),
    ):
        done = run_training_cli("--quiet", *args)
        assert done.returncode == 0, done.stderr[-3000:]
    return {
        "models": base / "models",
        "keras": {"gray": gray, "rgb": rgb},
        "images": sorted(images.rglob("*.png")),
    }


def _keras_probabilities(imported: dict, name: str) -> np.ndarray:
    """What the user's own model says on the decoded images, in its own input range."""
    meta = load_metadata(imported["models"] / name / "1")
    spec = meta.input
    pixels = np.stack(
        [
            decode_image(p, spec.color_mode, (spec.height, spec.width), spec.resize_method)
            for p in imported["images"]
        ]
    ).astype(np.float32)
    if name == "gray":
        logits = imported["keras"]["gray"].predict(pixels / 255.0, verbose=0)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    return imported["keras"]["rgb"].predict(pixels, verbose=0)


def test_metadata_says_what_is_known(imported: dict) -> None:
    gray = load_metadata(imported["models"] / "gray" / "1")
    assert gray.metrics is None and gray.thresholds.calibrated is False
    assert gray.golden is not None
    assert (imported["models"] / "gray" / "1" / gray.golden.path).is_file()
    assert gray.thresholds.policy == "fixed" and gray.thresholds.curves == {}
    assert [c.threshold for c in gray.thresholds.per_class] == [0.5] * 3
    assert gray.input.color_mode == "grayscale" and (gray.input.height, gray.input.width) == (
        12,
        12,
    )
    assert gray.training["imported"]["input_range"] == [0.0, 1.0]
    assert max(gray.parity.values()) <= 1e-5 and set(gray.parity) == {
        "onnx",
        "savedmodel",
        "keras_h5",
    }

    rgb = load_metadata(imported["models"] / "rgb" / "1")
    assert rgb.thresholds.calibrated and rgb.thresholds.policy == "recall"
    assert set(rgb.thresholds.curves) == set(LABELS) and rgb.metrics is not None
    assert rgb.metrics.samples == 6  # the held-out half of 3 x 4 calibration images
    assert "Rescaling" in rgb.training["imported"]["input_range_from"]


@pytest.fixture(scope="module")
def server(imported: dict, tmp_path_factory: pytest.TempPathFactory):
    srv = start_server(tmp_path_factory.mktemp("srv"), imported["models"])
    yield srv
    srv.stop()


def http_probabilities(server, name: str, paths: list[Path], **form: str) -> list:
    files = [("image", (p.name, p.read_bytes(), "image/png")) for p in paths]
    r = HTTP.post(f"{server.http}/classify", files=files, data={"model": name, **form})
    assert r.status_code == 200, r.text
    return [[pred["probabilities"][lab] for lab in LABELS] for pred in r.json()["predictions"]]


def grpc_probabilities(server, name: str, paths: list[Path]) -> np.ndarray:
    request = pb.ModelInferRequest(model_name=name)
    tensor = request.inputs.add(name="images", datatype="BYTES", shape=[len(paths)])
    tensor.contents.bytes_contents.extend(p.read_bytes() for p in paths)
    with grpc.insecure_channel(server.grpc) as channel:
        reply = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=60)
    index, out = next((i, o) for i, o in enumerate(reply.outputs) if o.name == "probabilities")
    raw = reply.raw_output_contents[index] if reply.raw_output_contents else None
    flat = np.frombuffer(raw, "<f4") if raw else np.asarray(out.contents.fp32_contents)
    return flat.reshape(len(paths), len(LABELS))


@pytest.mark.parametrize("name", ["gray", "rgb"])
def test_served_over_both_protocols_as_keras_says(imported: dict, server, name: str) -> None:
    expected = _keras_probabilities(imported, name)
    http = np.asarray(http_probabilities(server, name, imported["images"]))
    np.testing.assert_allclose(http, expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(
        grpc_probabilities(server, name, imported["images"]), expected, atol=1e-5, rtol=0
    )


def test_models_route_and_retargeting_without_curves(imported: dict, server) -> None:
    entries = {m["name"]: m for m in HTTP.get(f"{server.http}/models").json()["models"]}
    assert entries["gray"]["test_metrics"] is None
    assert entries["gray"]["thresholds"]["calibrated"] is False
    png = imported["images"][0]
    files = [("image", (png.name, png.read_bytes(), "image/png"))]
    r = HTTP.post(
        f"{server.http}/classify", files=files, data={"model": "gray", "target_precision": "0.9"}
    )
    assert r.status_code == 400 and "no calibration curves" in r.text, r.text
    assert http_probabilities(server, "rgb", [png], target_precision="0.9")  # rgb has curves


def test_offline_score_equals_the_server(imported: dict, server, tmp_path: Path) -> None:
    out = tmp_path / "scores.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "service", "score", "--model", str(imported["models"] / "gray"),
         "--input", str(imported["images"][0].parents[1]), "--output", str(out), "--no-progress"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = pd.read_json(out, lines=True).set_index("path")
    scored = np.stack([rows.loc[str(p), "probabilities"] for p in imported["images"]])
    served = http_probabilities(server, "gray", imported["images"])
    # NOTE: the server sends the shortest repr of each float32: the same float32 values
    np.testing.assert_array_equal(scored.astype(np.float32), np.asarray(served, np.float32))


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--input-range", "0,2"], "--input-range"),
        (["--image-size", "0x3"], "--image-size"),
        (["--target-precision", "0.9"], "need --calibration-data"),
        (["--name", "bad name"], "--name"),
        (["--calibration-data", "/nonexistent"], "not an existing folder"),
    ],
)
def test_bad_flags_exit_2_with_one_clear_line(tmp_path: Path, flags: list, needle: str) -> None:
    (tmp_path / "m.h5").write_bytes(b"")
    (tmp_path / "labels.txt").write_text("a\nb\n")
    args = ["import", str(tmp_path / "m.h5"), "--labels", str(tmp_path / "labels.txt")]
    done = run_training_cli(*args, *(["--name", "x"] if "--name" not in flags else []), *flags)
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert "error:" in last and needle in last and "Traceback" not in done.stderr, done.stderr
