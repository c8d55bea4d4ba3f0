"""Model repositories for the tests: a tiny deterministic ONNX model built with onnx.helper (no
TensorFlow), its reference answers, images for it, and repositories built from it.

The model: float32 [N, 8, 8, 1] in 0..255 → flatten → MatMul → (Softmax). Three labels:
"top" lights up for bright rows 0-3, "bottom" for rows 4-7, "left" for columns 0-3.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from contract.metadata import ModelMetadata, sha256_path

LABELS = ["top", "bottom", "left"]
H = W = 8


def weights() -> np.ndarray:
    w = np.zeros((H, W, 3), np.float32)
    w[:4, :, 0] = 1.0
    w[4:, :, 1] = 1.0
    w[:, :4, 2] = 1.0
    return w.reshape(H * W, 3) * (0.5 / 255.0)


def reference_probabilities(pixels: np.ndarray) -> np.ndarray:
    logits = pixels.reshape(len(pixels), -1).astype(np.float64) @ weights().astype(np.float64)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def build_onnx(path: Path, logits: bool = False) -> None:
    nodes = [
        helper.make_node("Reshape", ["image", "shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["logits" if not logits else "probabilities"]),
    ]
    if not logits:
        nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1))
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", H, W, 1])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 3])],
        initializer=[
            numpy_helper.from_array(np.array([-1, H * W], np.int64), "shape"),
            numpy_helper.from_array(weights(), "w"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def metadata(name: str, version: int, sha: str, logits: bool = False) -> dict:
    grid = [round(0.1 * i, 2) for i in range(1, 10)]
    curve = {
        "thresholds": grid,
        "precision": [0.5 + 0.05 * i for i in range(9)],  # 0.5 … 0.9
        "recall": [1.0 - 0.1 * i for i in range(9)],  # 1.0 … 0.2
    }
    per_class = [
        {
            "label": lab,
            "threshold": 0.5,
            "val_precision": 0.7,
            "val_recall": 0.6,
            "target_met": True,
        }
        for lab in LABELS
    ]
    cm = {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 10}
    meta = {
        "name": name,
        "version": version,
        "created": datetime.now(UTC).isoformat(),
        "labels": LABELS,
        "input": {
            "name": "image",
            "height": H,
            "width": W,
            "channels": 1,
            "color_mode": "grayscale",
            "resize_method": "bilinear",
        },
        "output": {"name": "probabilities", "kind": "logits" if logits else "probabilities"},
        "thresholds": {
            "policy": "precision",
            "target": 0.7,
            "per_class": per_class,
            "curves": {lab: curve for lab in LABELS},
        },
        "metrics": {
            "accuracy": 1.0,
            "macro_precision": 1.0,
            "macro_recall": 1.0,
            "macro_f1": 1.0,
            "per_class": {lab: cm for lab in LABELS},
            "confusion_matrix": [[10, 0, 0], [0, 10, 0], [0, 0, 10]],
            "samples": 30,
        },
        "artifacts": {"onnx": {"path": "model.onnx", "sha256": sha}},
        "onnx_opset": 17,
        "parity": {"onnx": 0.0},
        "frameworks": {"onnx": onnx.__version__},
        "training": {"fixture": True},
    }
    ModelMetadata.model_validate(meta)
    return meta


def write_version(
    root: Path, name: str, version: int, *, logits: bool = False, bad_sha: bool = False
) -> Path:
    """Publish ``root/name/version`` atomically (as training does)."""
    tmp = root / name / f".tmp-{version}"
    tmp.mkdir(parents=True)
    build_onnx(tmp / "model.onnx", logits)
    sha = "0" * 64 if bad_sha else sha256_path(tmp / "model.onnx")
    (tmp / "metadata.json").write_text(json.dumps(metadata(name, version, sha, logits)))
    final = root / name / str(version)
    tmp.rename(final)
    return final


def image_pixels(kind: str) -> np.ndarray:
    """uint8 [8, 8, 1]: bright where ``kind`` says."""
    x = np.zeros((H, W, 1), np.uint8)
    if kind == "top":
        x[:4] = 255
    elif kind == "bottom":
        x[4:] = 255
    elif kind == "left":
        x[:, :4] = 255
    return x


def encode(pixels: np.ndarray, fmt: str = "PNG", mode: str | None = None) -> bytes:
    image = Image.fromarray(pixels[..., 0], "L")
    if mode:
        image = image.convert(mode)
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def tiny_repo(root: Path) -> Path:
    models = root / "models"
    write_version(models, "tiny", 1)
    return models


def slow_repo(root: Path, repeat: int = 32, width: int = 2048) -> Path:
    """Model "slow": the tiny model's answers, but ``repeat`` [width x width] MatMuls per image,
    so a batch of a few dozen images keeps the (single) inference thread busy for a while."""
    lift = np.zeros((H * W, width), np.float32)
    lift[:, : H * W] = np.eye(H * W, dtype=np.float32)
    head = np.zeros((width, 3), np.float32)
    head[: H * W] = weights()
    nodes = [
        helper.make_node("Reshape", ["image", "shape"], ["x0"]),
        helper.make_node("MatMul", ["x0", "lift"], ["h0"]),
    ]
    for i in range(repeat):  # NOTE: identity weights, so ORT cannot fold them away
        nodes.append(helper.make_node("MatMul", [f"h{i}", "eye"], [f"h{i + 1}"]))
    nodes += [
        helper.make_node("MatMul", [f"h{repeat}", "head"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", H, W, 1])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 3])],
        initializer=[
            numpy_helper.from_array(np.array([-1, H * W], np.int64), "shape"),
            numpy_helper.from_array(lift, "lift"),
            numpy_helper.from_array(np.eye(width, dtype=np.float32), "eye"),
            numpy_helper.from_array(head, "head"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder = root / "models" / "slow" / "1"
    folder.mkdir(parents=True)
    onnx.save(model, str(folder / "model.onnx"))
    meta = metadata("slow", 1, sha256_path(folder / "model.onnx"))
    (folder / "metadata.json").write_text(json.dumps(meta))
    return root / "models"


# --- a repository for the page and document tests ------------------------------------------

CARD_TEXT = (
    "# tiny v1\n\nA fixture model card.\n\n<script>alert(1)</script>\n\n"
    "| class | precision |\n| --- | --- |\n| a | 0.9 |\n"
)


def png(colour: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def site_repo(root: Path) -> Path:
    """``tiny/1`` (ready, with report/ as training writes it) and ``tiny/2`` (checksum mismatch:
    failed).

    Beside the model, ``secret.txt`` and a symlink ``report/escape.png`` pointing at it: the
    report route must never serve a file outside ``report/``.
    """
    models = root / "models"
    version = write_version(models, "tiny", 1)
    report = version / "report"
    report.mkdir()
    for name, colour in (("training_curves", (200, 0, 0)), ("pr_curves", (0, 0, 200))):
        (report / f"{name}.png").write_bytes(png(colour))
    (report / "MODEL_CARD.md").write_text(CARD_TEXT)
    (report / "notes.txt").write_text("not a report file")
    (root / "secret.png").write_bytes(png((0, 0, 0)))
    (report / "escape.png").symlink_to(root / "secret.png")
    write_version(models, "tiny", 2, bad_sha=True)
    return models
