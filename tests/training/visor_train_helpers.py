"""Synthetic class-folder images for the training tests (unique module name: no package here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


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
