"""Training in the tests: ``python -m training`` in a subprocess, and synthetic class-folder
images to train on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from tests.helpers import ROOT


def run_training_cli(
    *args: str, timeout: float = 300, env: dict | None = None
) -> subprocess.CompletedProcess:
    """``python -m training ARGS`` in a subprocess (TensorFlow stays out of the test process)."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "training", *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        check=False,
        text=True,
        timeout=timeout,
    )


# the digits model of the service tests: 16x16 grayscale CNN, 8 epochs (tests/conftest.py)
DIGITS_TRAIN = ("--image-size", "16", "--epochs", "8", "--batch-size", "64")


def train_digits(data: Path, models: Path, work: Path, *extra: str) -> None:
    """``python -m training train`` of the tests' digits model into ``models`` (next version)."""
    args = ("--quiet", "train", "--data", str(data), "--name", "digits", "--out", str(models),
            "--work-dir", str(work), *DIGITS_TRAIN, *extra)  # fmt: skip
    done = run_training_cli(*args)
    assert done.returncode == 0, f"python -m training train failed:\n{done.stderr[-3000:]}"


def class_pattern(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """A learnable grayscale pattern: a bright bar whose position encodes the label, plus noise."""
    pixels = rng.integers(0, 60, (size, size)).astype(np.uint8)
    band = max(1, size // 4)
    start = (label * band) % max(1, size - band + 1)
    pixels[start : start + band, :] = 230
    return pixels


def write_classes(
    root: Path,
    counts: dict[str, int],
    size: int = 12,
    mode: str = "L",
    seed: int = 0,
    fmt: str = "png",
    prefix: str = "",
) -> Path:
    """Write ``root/<label>/<n>.<fmt>`` images with :func:`class_pattern`, converted to ``mode``."""
    rng = np.random.default_rng(seed)
    for index, (label, count) in enumerate(counts.items()):
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(count):
            image = Image.fromarray(class_pattern(index, size, rng), mode="L")
            image.convert(mode).save(folder / f"{prefix}{n:03d}.{fmt}")
    return root


SHAPES = {"circle": (200, 60, 50), "square": (60, 170, 80), "triangle": (70, 90, 210)}


def write_shapes(root: Path, count: int, size: int = 32, seed: int = 0) -> Path:
    """A tiny photo-like set: ``root/<shape>/<n>.png``, a coloured shape of random size and place
    on a noisy, randomly tinted background (RGB PNG files)."""
    rng = np.random.default_rng(seed)
    for label, colour in SHAPES.items():
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(count):
            tint = rng.integers(70, 150) + rng.integers(-15, 15, 3)
            background = np.clip(tint + rng.normal(0, 20, (size, size, 3)), 0, 255)
            image = Image.fromarray(background.astype(np.uint8), mode="RGB")
            r = int(rng.integers(size // 4, size // 2 - 1))
            cx, cy = (int(v) for v in rng.integers(r, size - r, 2))
            box = (cx - r, cy - r, cx + r, cy + r)
            fill = tuple(int(np.clip(c + rng.integers(-30, 30), 0, 255)) for c in colour)
            draw = ImageDraw.Draw(image)
            if label == "circle":
                draw.ellipse(box, fill=fill)
            elif label == "square":
                draw.rectangle(box, fill=fill)
            else:
                draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
            image.save(folder / f"{n:03d}.png")
    return root


def random_backbone(path: Path) -> str:
    """A MobileNetV2 feature extractor with random weights, saved where ``--weights`` can
    read it: a local weight file makes a run transfer learning (frozen base, then fine-tuning)
    without downloading ImageNet weights."""
    import tf_keras as keras

    keras.applications.MobileNetV2(
        include_top=False, weights=None, input_shape=(32, 32, 3)
    ).save_weights(str(path))
    return str(path)
