"""``python -m training import`` of the models people have: a Keras 3 ``.keras`` file and an ONNX
classifier from another framework (NCHW, ImageNet normalisation, logits), both built here.

Each is published, served over HTTP and gRPC by a real server, and answers as its source does
on the same decoded images, within the tolerance its metadata states: Keras 3's own ``predict``
for the Keras 3 model; the original ONNX graph fed pixels preprocessed in NumPy for the ONNX one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import training  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from contract.imaging import decode_image
from contract.metadata import load_metadata
from tests.helpers.servers import HTTP, start_server
from tests.helpers.training import run_training_cli, write_classes
from tests.training.test_import import grpc_probabilities, http_probabilities

keras3 = pytest.importorskip("keras")

LABELS = ["a", "b", "c"]
IMAGENET = ("--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225")
SIZE = 12


def keras3_logits_model() -> keras3.Model:
    """Keras 3, RGB 12x12, trained on pixels in 0..1 (no Rescaling layer), ends in logits."""
    keras3.utils.set_random_seed(5)
    inputs = keras3.Input((SIZE, SIZE, 3))
    x = keras3.layers.Conv2D(4, 3, activation="relu")(inputs)
    x = keras3.layers.GlobalAveragePooling2D()(x)
    model = keras3.Model(inputs, keras3.layers.Dense(3)(x))
    rng = np.random.default_rng(5)
    model.set_weights(
        [rng.normal(0.0, 0.5, w.shape).astype(np.float32) for w in model.get_weights()]
    )
    return model


def onnx_nchw_weights() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {
        "conv.w": rng.normal(0, 0.5, (4, 3, 3, 3)).astype(np.float32),
        "conv.b": rng.normal(0, 0.1, 4).astype(np.float32),
        "fc.w": rng.normal(0, 0.8, (3, 4)).astype(np.float32),
        "fc.b": rng.normal(0, 0.1, 3).astype(np.float32),
    }


def build_nchw_onnx(path: Path) -> onnx.ModelProto:
    """As torch.onnx.export writes a torchvision-style classifier: ``input`` [N,3,H,W] normalised
    with ImageNet mean/std → Conv → Relu → GlobalAveragePool → Flatten → Gemm → logits."""
    nodes = [
        helper.make_node("Conv", ["input", "conv.w", "conv.b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "fc.w", "fc.b"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "torch_like",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        initializer=[numpy_helper.from_array(v, k) for k, v in onnx_nchw_weights().items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    model.producer_name = "pytorch"
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return model


def onnx_source_probabilities(path: Path, pixels: np.ndarray) -> np.ndarray:
    """The original graph on pixels preprocessed as torchvision does, softmax in NumPy."""
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    x = ((pixels / 255.0 - mean) / std).astype(np.float32).transpose(0, 3, 1, 2)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input": np.ascontiguousarray(x)})[0].astype(np.float64)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("sources")
    (base / "labels.txt").write_text("\n".join(LABELS) + "\n")
    k3 = keras3_logits_model()
    k3.save(base / "k3.keras")
    build_nchw_onnx(base / "torch.onnx")
    calib = write_classes(base / "calib", dict.fromkeys(LABELS, 4), size=15, mode="RGB", seed=3)
    images = write_classes(base / "images", dict.fromkeys(LABELS, 2), size=17, mode="RGB", seed=4)
    common = ("--labels", str(base / "labels.txt"), "--out", str(base / "models"))
    runs = {
        "k3": ("import", str(base / "k3.keras"), "--name", "k3", "--input-range", "0,1"),
        "torch": (
            "import", str(base / "torch.onnx"), "--name", "torch", "--input-layout", "nchw",
            "--input-range", "0,1", *IMAGENET, "--calibration-data", str(calib),
        ),
    }  # fmt: skip
    for args in runs.values():
        done = run_training_cli("--quiet", *args, *common)
        assert done.returncode == 0, done.stderr[-3000:]
    return {
        "models": base / "models",
        "k3": k3,
        "onnx": base / "torch.onnx",
        "images": sorted(images.rglob("*.png")),
    }


def _pixels(imported: dict, name: str) -> np.ndarray:
    spec = load_metadata(imported["models"] / name / "1").input
    size = (spec.height, spec.width)
    return np.stack(
        [decode_image(p, spec.color_mode, size, spec.resize_method) for p in imported["images"]]
    ).astype(np.float32)


def source_probabilities(imported: dict, name: str) -> np.ndarray:
    pixels = _pixels(imported, name)
    if name == "torch":
        return onnx_source_probabilities(imported["onnx"], pixels)
    logits = np.asarray(imported["k3"].predict(pixels / 255.0, verbose=0), np.float64)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_metadata_records_the_source_and_its_preprocessing(imported: dict) -> None:
    k3 = load_metadata(imported["models"] / "k3" / "1")
    record = k3.training["imported"]
    assert record["keras_version"].startswith("3") and record["format"] == "keras"
    assert set(k3.artifacts) == {"onnx", "savedmodel"} and set(k3.parity) == {"onnx", "savedmodel"}
    assert record["logits_softmaxed"] and record["input_range"] == [0.0, 1.0]
    assert record["parity_tolerance"] == {"atol": 1e-5, "rtol": 1e-3}  # train's defaults
    assert max(k3.parity.values()) <= 1e-5 + 1e-3
    assert k3.golden is not None and k3.thresholds.calibrated is False

    torch = load_metadata(imported["models"] / "torch" / "1")
    record = torch.training["imported"]
    assert set(torch.artifacts) == {"onnx"} and torch.onnx_opset == 13
    assert record["input_layout"] == "nchw" and record["std"] == [0.229, 0.224, 0.225]
    assert record["logits_softmaxed"] and "logits" in record["outputs_from"]
    assert torch.parity["onnx"] <= 1e-5 + 1e-3
    assert torch.thresholds.calibrated and torch.metrics is not None and torch.golden is not None
    assert (torch.input.height, torch.input.width, torch.input.channels) == (SIZE, SIZE, 3)


def test_the_wrapped_onnx_graph_takes_raw_nhwc_pixels(imported: dict) -> None:
    version = imported["models"] / "torch" / "1"
    session = ort.InferenceSession(str(version / "model.onnx"), providers=["CPUExecutionProvider"])
    (image,) = session.get_inputs()
    assert image.name == "image" and image.shape[1:] == [SIZE, SIZE, 3]
    pixels = _pixels(imported, "torch")
    out = session.run(None, {"image": pixels})[0]
    expected = onnx_source_probabilities(imported["onnx"], pixels)
    np.testing.assert_allclose(out, expected, atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def server(imported: dict, tmp_path_factory: pytest.TempPathFactory):
    srv = start_server(tmp_path_factory.mktemp("srv"), imported["models"])
    yield srv
    srv.stop()


@pytest.mark.parametrize("name", ["k3", "torch"])
def test_served_over_both_protocols_as_the_source_says(imported: dict, server, name: str) -> None:
    meta = load_metadata(imported["models"] / name / "1")
    tolerance = meta.training["imported"]["parity_tolerance"]
    expected = source_probabilities(imported, name)
    http = np.asarray(http_probabilities(server, name, imported["images"]))
    np.testing.assert_allclose(http, expected, atol=tolerance["atol"], rtol=tolerance["rtol"])
    grpc_out = grpc_probabilities(server, name, imported["images"])
    np.testing.assert_allclose(grpc_out, expected, atol=tolerance["atol"], rtol=tolerance["rtol"])


def test_the_keras3_savedmodel_serves_the_same(imported: dict, tmp_path: Path) -> None:
    srv = start_server(tmp_path, imported["models"], backend="savedmodel")
    try:
        served = np.asarray(http_probabilities(srv, "k3", imported["images"]))
        models = {m["name"]: m for m in HTTP.get(f"{srv.http}/models").json()["models"]}
    finally:
        srv.stop()
    np.testing.assert_allclose(served, source_probabilities(imported, "k3"), atol=1e-5, rtol=0)
    # The ONNX import has no SavedModel: it fails to load here, saying what to do.
    assert models["torch"]["status"] == "failed"
    assert "VISOR_BACKEND=onnx" in models["torch"]["reason"], models["torch"]


def _import(tmp_path: Path, model: Path, *flags: str):
    (tmp_path / "labels.txt").write_text("\n".join(LABELS))
    return run_training_cli(
        "import", str(model), "--labels", str(tmp_path / "labels.txt"), "--name", "x",
        "--out", str(tmp_path / "models"), *flags,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        ([], "give --input-range"),
        (["--input-range", "0,1", "--mean", "0.5,0.5"], "--mean gives 2 values"),
        (["--input-range", "0,1", "--std", "0"], "--std values must not be 0"),
    ],
)
def test_onnx_flags_that_do_not_fit_are_one_clear_line(
    tmp_path: Path, flags: list, needle: str
) -> None:
    build_nchw_onnx(tmp_path / "m.onnx")
    done = _import(tmp_path, tmp_path / "m.onnx", *flags)
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 1 and needle in last and "Traceback" not in done.stderr, last
    assert not (tmp_path / "models" / "x" / "1").exists()


def test_a_file_that_is_not_onnx_is_refused(tmp_path: Path) -> None:
    (tmp_path / "m.onnx").write_bytes(b"not a protobuf at all")
    done = _import(tmp_path, tmp_path / "m.onnx", "--input-range", "0,1")
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 1 and "not a valid ONNX model" in last, last


def test_onnx_only_flags_are_refused_for_keras_models(tmp_path: Path) -> None:
    (tmp_path / "m.h5").write_bytes(b"")
    done = _import(tmp_path, tmp_path / "m.h5", "--input-layout", "nchw")
    assert done.returncode == 2 and "only for .onnx models" in done.stderr.splitlines()[-1]


def build_nhwc_conv_head_onnx(path: Path) -> None:
    """NHWC in (as a TensorFlow export), a 1x1-conv head, Softmax, scores shaped [N, 3, 1, 1]."""
    rng = np.random.default_rng(9)
    nodes = [
        helper.make_node("Transpose", ["pixels"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "w"], ["c"]),
        helper.make_node("GlobalAveragePool", ["c"], ["g"]),
        helper.make_node("Softmax", ["g"], ["scores"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "conv_head",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["n", SIZE, SIZE, 3])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["n", 3, 1, 1])],
        initializer=[numpy_helper.from_array(rng.normal(0, 1, (3, 3, 1, 1)).astype("f4"), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def test_an_nhwc_graph_with_a_conv_head_is_read_and_wrapped(tmp_path: Path) -> None:
    from training.import_source import INPUT_RANGES
    from training.onnx_graph import Preprocessing, read_onnx, reference, wrap

    build_nhwc_conv_head_onnx(tmp_path / "m.onnx")
    source = read_onnx(tmp_path / "m.onnx", None, None, None)
    assert source.layout == "nhwc" and source.classes == 3 and source.outputs_probabilities
    prep = Preprocessing("nhwc", INPUT_RANGES["-1,1"], (0.5,), (2.0,))
    wrapped = wrap(source, prep, False, "image", "probabilities")
    session = ort.InferenceSession(wrapped.SerializeToString(), providers=["CPUExecutionProvider"])
    pixels = np.random.default_rng(1).integers(0, 256, (4, SIZE, SIZE, 3)).astype(np.float32)
    out = session.run(None, {"image": pixels})[0]
    assert out.shape == (4, 3)
    np.testing.assert_allclose(out, reference(source, prep, pixels, False), atol=1e-6, rtol=0)
