"""Export: the three artifacts reload and agree with Keras; publishing is atomic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import training  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("tf_keras")
ort = pytest.importorskip("onnxruntime")

from training.config import ExportConfig, ModelConfig
from training.errors import ExportError
from training.export import check_parity, publish, write_artifacts
from training.models import build_model
from training.parity import ParityTolerance


@pytest.fixture(scope="module")
def tiny_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    model = build_model(ModelConfig("cnn"), num_classes=3, size=8, channels=3)
    # NOTE: random weights everywhere (BatchNorm statistics included) so the probabilities are
    # spread out and every layer matters to the comparison.
    rng = np.random.default_rng(0)
    for layer in model.layers:
        scale = 0.01 if layer.name == "logits" else 0.3
        weights = [rng.normal(0.0, scale, w.shape).astype(np.float32) for w in layer.get_weights()]
        if isinstance(layer, keras.layers.BatchNormalization):
            weights[3] = np.abs(weights[3]) + 0.5  # variance > 0
        layer.set_weights(weights) if weights else None
    return model


@pytest.fixture(scope="module")
def exported(tiny_model, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("export")
    write_artifacts(tiny_model, folder, opset=17)
    return folder


def _batch(n: int = 16) -> np.ndarray:
    return (np.random.default_rng(1).random((n, 8, 8, 3)) * 255).astype(np.float32)


def test_three_artifacts_reloaded_agree_within_1e_5(tiny_model, exported: Path) -> None:
    batch = _batch()
    parity = check_parity(tiny_model, exported, batch, ParityTolerance(1e-5, 0.0))
    assert set(parity) == {"onnx", "savedmodel", "keras_h5"}
    assert all(diff <= 1e-5 for diff in parity.values())
    # independently of check_parity: reload each artifact here and compare
    expected = tiny_model.predict(batch, verbose=0)
    session = ort.InferenceSession(str(exported / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert [o.name for o in session.get_outputs()] == ["probabilities"]
    onnx_out = session.run(["probabilities"], {"image": batch})[0]
    sm = tf.saved_model.load(str(exported / "saved_model")).signatures["serving_default"]
    sm_out = sm(image=tf.constant(batch))["probabilities"].numpy()
    h5_out = keras.models.load_model(exported / "model.h5", compile=False).predict(batch, verbose=0)
    for out in (onnx_out, sm_out, h5_out):
        assert out.shape == (16, 3)
        assert np.abs(out - expected).max() <= 1e-5
    np.testing.assert_allclose(expected.sum(axis=1), 1.0, atol=1e-5)  # softmax is in the graph
    assert expected.max() < 0.999 and expected.std(axis=0).max() > 1e-4  # not saturated or constant
    assert session.get_inputs()[0].shape[1:] == [8, 8, 3]


def test_parity_failure_raises(tiny_model, exported: Path) -> None:
    with pytest.raises(ExportError, match="parity failed"):
        check_parity(tiny_model, exported, _batch(), ParityTolerance(0.0, 0.0))


def test_failed_publish_leaves_no_version_folder(tiny_model, tmp_path: Path) -> None:
    cfg = ExportConfig(name="m", out_dir=tmp_path)

    def fill(tmp: Path) -> None:
        write_artifacts(tiny_model, tmp, opset=17)
        check_parity(tiny_model, tmp, _batch(), ParityTolerance(0.0, 0.0))  # after the artifacts

    with pytest.raises(ExportError):
        publish(cfg, fill, lambda tmp, version: pytest.fail("finish must not run"))
    assert list((tmp_path / "m").iterdir()) == []


def test_publish_takes_the_next_version_and_renames_atomically(tmp_path: Path) -> None:
    (tmp_path / "m" / "1").mkdir(parents=True)
    (tmp_path / "m" / "7").mkdir()
    (tmp_path / "m" / "notaversion").mkdir()
    seen: list[int] = []

    def finish(tmp: Path, version: int):
        seen.append(version)
        assert tmp.name.startswith(".tmp-") and tmp.parent == tmp_path / "m"
        raise RuntimeError("stop before writing metadata")

    with pytest.raises(RuntimeError):
        publish(
            ExportConfig(name="m", out_dir=tmp_path),
            lambda tmp: (tmp / "x").write_text("x"),
            finish,
        )
    assert seen == [8]
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["1", "7", "notaversion"]


def test_cnn_width_sets_the_filters_of_each_stage() -> None:
    model = build_model(ModelConfig("cnn", cnn_width=4), num_classes=3, size=8, channels=1)
    filters = [layer.filters for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert filters == [4, 4, 8, 8, 16]
