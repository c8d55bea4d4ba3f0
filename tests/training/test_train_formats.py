"""Every image format Pillow decodes, TIFF above all: one list for training, scoring and the page.

A class folder of TIFF files (8-bit, 16-bit, LZW-compressed RGB, multi-page: the first page)
trains, and ``service score`` scores the same folder, every file decoded as training decoded it.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from contract.imaging import decode_image, image_suffixes
from contract.metadata import load_metadata
from tests.helpers import ROOT
from tests.helpers.training import class_pattern, run_training_cli
from training.config import DataConfig
from training.data import load_dataset

SIZE = 12


def test_the_list_is_pillows_without_what_it_cannot_decode() -> None:
    suffixes = image_suffixes()
    assert {".tif", ".tiff", ".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif"} <= suffixes
    assert {".ppm", ".tga", ".jp2", ".psd", ".qoi"} <= suffixes  # formats the old list lacked
    assert not {".h5", ".hdf", ".grib", ".bufr", ".wmf", ".mpg", ".pdf"} & suffixes


@pytest.mark.parametrize("suffix", sorted(image_suffixes()))
def test_every_listed_format_that_pillow_writes_decodes(suffix: str) -> None:
    fmt = Image.registered_extensions()[suffix]
    image = Image.fromarray(np.arange(48 * 64 * 3, dtype=np.uint8).reshape(48, 64, 3), "RGB")
    buffer = io.BytesIO()
    try:
        image.save(buffer, format=fmt)
    except (KeyError, OSError, ValueError) as exc:
        pytest.skip(f"Pillow reads {fmt} but cannot write this image as {fmt}: {exc}")
    pixels = decode_image(buffer.getvalue(), "rgb", (8, 8), "bilinear")
    assert pixels.shape == (8, 8, 3) and pixels.dtype == np.uint8


def write_tiff_classes(root: Path, per_class: int = 10) -> dict[Path, np.ndarray]:
    """``root/<label>/*.tif[f]`` in four TIFF flavours; returns each file's first-page pixels."""
    rng = np.random.default_rng(11)
    first_pages = {}
    for label_index, label in enumerate(("bar_top", "bar_mid", "bar_low")):
        folder = root / label
        folder.mkdir(parents=True)
        for n in range(per_class):
            pixels = class_pattern(label_index, SIZE, rng)
            flavour = n % 4
            path = folder / f"{n:03d}.{'tiff' if flavour == 3 else 'tif'}"
            if flavour == 0:
                Image.fromarray(pixels, "L").save(path)
            elif flavour == 1:  # 16-bit, as scientific cameras write: 0..65535
                Image.fromarray(pixels.astype(np.uint16) * 257).save(path)
            elif flavour == 2:
                Image.fromarray(pixels, "L").convert("RGB").save(path, compression="tiff_lzw")
            else:  # multi-page: the second page would teach the opposite
                pages = [Image.fromarray(pixels, "L"), Image.fromarray(255 - pixels, "L")]
                pages[0].save(path, save_all=True, append_images=pages[1:])
            first_pages[path] = pixels
    return first_pages


def test_a_multi_page_tiff_decodes_its_first_page(tmp_path: Path) -> None:
    pages = write_tiff_classes(tmp_path / "t", per_class=4)
    for path, first in pages.items():
        decoded = decode_image(path, "grayscale", (SIZE, SIZE), "bilinear")[..., 0]
        np.testing.assert_array_equal(decoded, first)


def test_the_folder_scan_takes_tiffs_and_names_what_it_skips(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_tiff_classes(root, per_class=6)
    (root / "bar_top" / "weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n")
    dataset = load_dataset(DataConfig(data_dir=root))
    assert sum(len(s.paths) for s in dataset.splits.values()) == 18
    assert dataset.color_mode == "rgb"  # one RGB flavour among grayscale files
    [(skipped, reason)] = dataset.skipped
    assert skipped.name == "weights.h5" and "not a format Pillow decodes" in reason


def test_a_folder_of_tiffs_trains_and_scores(tmp_path: Path) -> None:
    data = tmp_path / "tiffs"
    pages = write_tiff_classes(data)
    out = tmp_path / "models"
    done = run_training_cli(
        "--quiet", "train", "--data", str(data), "--name", "tiffs", "--out", str(out),
        "--image-size", str(SIZE), "--epochs", "1", "--batch-size", "8",
        "--work-dir", str(tmp_path / "w"), "--min-test-accuracy", "0",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "unsupported file type" not in done.stderr
    meta = load_metadata(out / "tiffs" / "1")
    assert meta.training["dataset"]["skipped_files"] == []
    scores = tmp_path / "scores.jsonl"
    scored = subprocess.run(
        [sys.executable, "-m", "service", "score", "--model", str(out / "tiffs"),
         "--input", str(data), "--output", str(scores), "--no-progress"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert scored.returncode == 0, scored.stderr[-3000:]
    rows = pd.read_json(scores, lines=True)
    assert sorted(rows["path"]) == sorted(str(p) for p in pages)
    assert rows["error"].isna().all(), rows["error"].dropna().tolist()
    assert all(len(p) == 3 for p in rows["probabilities"])
