"""Data folders: the digits command, bad-data errors, corrupt files, mixed modes, splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from contract.imaging import decode_image
from tests.helpers.training import write_classes
from training.config import DataConfig
from training.data import load_dataset
from training.errors import DatasetError


def test_dataset_digits_writes_png_class_folders(cli, tmp_path: Path) -> None:
    done = cli("dataset", "digits", "--out", str(tmp_path / "d"))
    assert done.returncode == 0, done.stderr
    folders = sorted(p.name for p in (tmp_path / "d").iterdir())
    assert folders == [str(i) for i in range(10)]
    files = list((tmp_path / "d").rglob("*.png"))
    assert len(files) == 1797
    with Image.open(files[0]) as image:
        assert image.mode == "L" and image.size == (8, 8)


def _empty(root: Path) -> None:
    root.mkdir()


def _single_class(root: Path) -> None:
    write_classes(root, {"only": 5})


def _too_few(root: Path) -> None:
    write_classes(root, {"a": 10, "b": 2})


def _empty_label(root: Path) -> None:
    write_classes(root, {"a": 10, "b": 10})
    (root / "c").mkdir()


def _only_junk(root: Path) -> None:
    write_classes(root, {"a": 10})
    (root / "b").mkdir()
    (root / "b" / "x.png").write_bytes(b"not a png at all")


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (_empty, "has no class folders"),
        (_single_class, "need at least 2"),
        (_too_few, "label 'b' has 2 usable image(s); the split needs at least 3"),
        (_empty_label, "['c'] hold no usable images"),
        (_only_junk, "['b'] hold no usable images"),
    ],
    ids=["empty-folder", "single-class", "too-few-for-split", "empty-label", "only-corrupt"],
)
def test_bad_data_raises_a_clear_error(tmp_path: Path, build, message: str) -> None:
    root = tmp_path / "data"
    build(root)
    with pytest.raises(DatasetError) as info:
        load_dataset(DataConfig(root))
    assert message in str(info.value)


def test_missing_folder_is_a_clear_cli_error(cli, tmp_path: Path) -> None:
    done = cli(
        "train", "--data", str(tmp_path / "nope"), "--name", "m", "--out", str(tmp_path / "m")
    )
    assert done.returncode == 1
    assert "is not a folder" in done.stderr and "Traceback" not in done.stderr


def _mixed_folder(root: Path) -> Path:
    """RGB JPEGs of mixed sizes, grayscale and RGBA PNGs, a palette GIF, a corrupt JPEG, a text file."""
    write_classes(root, {"cat": 4}, size=20, mode="RGB", fmt="jpg")
    write_classes(root, {"dog": 4}, size=13, mode="L", fmt="png", seed=1)
    write_classes(root, {"dog": 2}, size=31, mode="RGBA", fmt="png", seed=2, prefix="rgba")
    write_classes(root / "extra", {"cat": 2}, size=9, mode="P", fmt="gif", seed=3)
    for gif in (root / "extra" / "cat").iterdir():
        gif.rename(root / "cat" / f"p{gif.name}")
    (root / "extra" / "cat").rmdir(), (root / "extra").rmdir()
    (root / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated nonsense")
    (root / "dog" / "notes.txt").write_text("not an image")
    return root


def test_corrupt_files_are_skipped_with_a_named_warning(tmp_path: Path, caplog) -> None:
    root = _mixed_folder(tmp_path / "mixed")
    ds = load_dataset(DataConfig(root))
    skipped = {p.name for p, _ in ds.skipped}
    assert skipped == {"broken.jpg", "notes.txt"}
    assert "broken.jpg" in caplog.text and "skipped 2 unreadable file(s)" in caplog.text
    assert ds.color_mode == "rgb"
    total = sum(len(s.paths) for s in ds.splits.values())
    assert total == 4 + 2 + 4 + 2  # cat jpgs + cat gifs + gray dog pngs + rgba dog pngs


def test_strict_mode_fails_on_the_corrupt_file(tmp_path: Path) -> None:
    root = _mixed_folder(tmp_path / "mixed")
    with pytest.raises(DatasetError, match=r"broken\.jpg: not a readable image"):
        load_dataset(DataConfig(root, strict=True))


def test_mixed_modes_and_sizes_decode_to_one_shape(tmp_path: Path) -> None:
    root = _mixed_folder(tmp_path / "mixed")
    ds = load_dataset(DataConfig(root))
    for path in (p for s in ds.splits.values() for p in s.paths):
        pixels = decode_image(path, ds.color_mode, (16, 16), "bilinear")
        assert pixels.shape == (16, 16, 3) and pixels.dtype == np.uint8


def test_all_grayscale_data_gives_grayscale_mode(tmp_path: Path) -> None:
    root = write_classes(tmp_path / "g", {"a": 5, "b": 5}, mode="L")
    write_classes(root, {"a": 2}, mode="1", seed=4, fmt="bmp", prefix="bits")
    assert load_dataset(DataConfig(root)).color_mode == "grayscale"


def test_split_is_deterministic_stratified_and_disjoint(tmp_path: Path) -> None:
    root = write_classes(tmp_path / "s", {"a": 40, "b": 20, "c": 60}, size=8)
    first = load_dataset(DataConfig(root, seed=7))
    again = load_dataset(DataConfig(root, seed=7))
    other = load_dataset(DataConfig(root, seed=8))
    for split in ("train", "val", "test"):
        assert first.splits[split].paths == again.splits[split].paths
    assert first.splits["test"].paths != other.splits["test"].paths
    all_paths = [p for s in first.splits.values() for p in s.paths]
    assert len(all_paths) == len(set(all_paths)) == 120
    for split, fraction in (("val", 0.15), ("test", 0.15)):
        counts = np.bincount(first.splits[split].labels, minlength=3)
        assert counts.tolist() == [round(n * fraction) for n in (40, 20, 60)]


def test_explicit_train_val_test_folders_are_used_as_given(tmp_path: Path) -> None:
    root = tmp_path / "e"
    write_classes(root / "train", {"a": 6, "b": 6})
    write_classes(root / "validation", {"a": 2, "b": 2}, seed=1)
    write_classes(root / "test", {"a": 3, "b": 1}, seed=2)
    ds = load_dataset(DataConfig(root))
    assert ds.labels == ["a", "b"]
    assert [len(ds.splits[s].paths) for s in ("train", "val", "test")] == [12, 4, 4]
    assert all("validation" in str(p) for p in ds.splits["val"].paths)


def test_exif_orientation_is_applied_like_the_server(tmp_path: Path) -> None:
    pixels = np.zeros((4, 12, 3), np.uint8)
    pixels[:, :6] = 255  # left half white, 4 rows x 12 columns
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "rotated.jpg"
    Image.fromarray(pixels).save(path, exif=exif, quality=100)
    decoded = decode_image(path, "rgb", (12, 4), "nearest")  # (height, width) of the upright image
    assert decoded.shape == (12, 4, 3)
    assert decoded[:6].mean() > 200 and decoded[6:].mean() < 50  # white half now on top
