"""Class-folder datasets: scan and validate images, split deterministically, write the digits set.

TF-free: the tf.data side lives in :mod:`training.pipeline`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from contract.imaging import is_grayscale, is_image_file, open_image
from contract.metadata import ColorMode
from training.config import DataConfig
from training.errors import DatasetError

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}


@dataclass(frozen=True)
class Split:
    """Image paths and integer labels of one split."""

    paths: list[Path]
    labels: np.ndarray  # int64 [N], index into Dataset.labels


@dataclass(frozen=True)
class Dataset:
    """A scanned, validated and split data folder."""

    labels: list[str]
    color_mode: ColorMode
    splits: dict[str, Split]
    skipped: list[tuple[Path, str]]


def _class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _scan_class(folder: Path, strict: bool, skipped: list, gray: list[bool]) -> list[Path]:
    """Usable images of one class folder; unreadable files are skipped (warned) or fatal."""
    good = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        reason = None
        if not is_image_file(path):
            reason = (
                f"unsupported file type {path.suffix or '(none)'}: not a format Pillow decodes "
                "(convert it to PNG or TIFF)"
            )
        else:
            try:
                gray.append(is_grayscale(open_image(path)))
            except (OSError, ValueError, Image.DecompressionBombError) as exc:
                reason = f"not a readable image ({exc.__class__.__name__}: {exc})"
        if reason is None:
            good.append(path)
            continue
        if strict:
            raise DatasetError(f"{path}: {reason} (--strict is set)")
        skipped.append((path, reason))
        log.warning("skipping %s: %s", path, reason)
    return good


def _scan_root(root: Path, strict: bool, skipped: list, gray: list[bool]) -> dict[str, list[Path]]:
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder")
    classes = {d.name: _scan_class(d, strict, skipped, gray) for d in _class_dirs(root)}
    if not classes:
        raise DatasetError(f"{root} has no class folders (expected {root}/<label>/<image files>)")
    return classes


def _explicit_split_roots(root: Path) -> dict[str, Path] | None:
    roots = {}
    for split, names in SPLIT_ALIASES.items():
        found = [root / n for n in names if (root / n).is_dir()]
        roots[split] = found[0] if found else None
    if all(roots.values()):
        return roots  # type: ignore[return-value]
    return None


def split_indices(labels: np.ndarray, cfg: DataConfig, names: list[str]) -> dict[str, np.ndarray]:
    """Seeded per-class split: each class contributes to train, val and test in proportion."""
    rng = np.random.default_rng(cfg.seed)
    parts: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for cls in range(len(names)):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        n_val = max(1, round(len(idx) * cfg.val_fraction))
        n_test = max(1, round(len(idx) * cfg.test_fraction))
        if len(idx) - n_val - n_test < 1:
            raise DatasetError(
                f"label {names[cls]!r} has {len(idx)} usable image(s); the split needs at least "
                f"{n_val + n_test + 1} (train, val and test each need one)"
            )
        parts["test"].append(idx[:n_test])
        parts["val"].append(idx[n_test : n_test + n_val])
        parts["train"].append(idx[n_test + n_val :])
    return {s: np.sort(np.concatenate(p)) for s, p in parts.items()}


def _check_classes(labels: list[str], counts: dict[str, int], where: Path) -> None:
    if len(labels) < 2:
        raise DatasetError(f"{where} has {len(labels)} class folder(s) {labels}; need at least 2")
    empty = [name for name in labels if counts.get(name, 0) == 0]
    if empty:
        raise DatasetError(f"{where}: label folder(s) {empty} hold no usable images")


def load_dataset(cfg: DataConfig) -> Dataset:
    """Scan ``cfg.data_dir`` (``<label>/*`` or ``train|val|test/<label>/*``) and split it."""
    skipped: list[tuple[Path, str]] = []
    gray: list[bool] = []
    explicit = _explicit_split_roots(cfg.data_dir) if cfg.data_dir.is_dir() else None
    if explicit:
        scanned = {s: _scan_root(r, cfg.strict, skipped, gray) for s, r in explicit.items()}
        labels = sorted(scanned["train"])
        _check_classes(labels, {k: len(v) for k, v in scanned["train"].items()}, explicit["train"])
        for split in ("val", "test"):
            extra = sorted(set(scanned[split]) - set(labels))
            if extra:
                raise DatasetError(f"{explicit[split]} has labels {extra} that train/ lacks")
            _check_classes(labels, {k: len(v) for k, v in scanned[split].items()}, explicit[split])
        splits = {s: _flatten(scanned[s], labels) for s in SPLITS}
    else:
        scanned_all = _scan_root(cfg.data_dir, cfg.strict, skipped, gray)
        labels = sorted(scanned_all)
        _check_classes(labels, {k: len(v) for k, v in scanned_all.items()}, cfg.data_dir)
        everything = _flatten(scanned_all, labels)
        index = split_indices(everything.labels, cfg, labels)
        splits = {
            s: Split([everything.paths[i] for i in idx], everything.labels[idx])
            for s, idx in index.items()
        }
    if skipped:
        log.warning("skipped %d unreadable file(s) under %s", len(skipped), cfg.data_dir)
    color_mode: ColorMode = "grayscale" if all(gray) else "rgb"
    return Dataset(labels=labels, color_mode=color_mode, splits=splits, skipped=skipped)


def _flatten(classes: dict[str, list[Path]], labels: list[str]) -> Split:
    paths = [p for name in labels for p in classes.get(name, [])]
    ids = [i for i, name in enumerate(labels) for _ in classes.get(name, [])]
    return Split(paths, np.asarray(ids, dtype=np.int64))


def scan_labelled(root: Path, strict: bool = False) -> tuple[list[Path], list[str]]:
    """Every usable image under ``root/<label>/`` with its label name (no split)."""
    classes = _scan_root(root, strict, [], [])
    return [p for name in sorted(classes) for p in classes[name]], [
        name for name in sorted(classes) for _ in classes[name]
    ]


def write_digits(out_dir: Path) -> int:
    """Write scikit-learn's 8x8 handwritten digits as ``out_dir/<digit>/<n>.png`` (0..255 gray)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.rint(digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    for n, (image, target) in enumerate(zip(pixels, digits.target, strict=True)):
        folder = out_dir / str(target)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image, mode="L").save(folder / f"{n:04d}.png")
    return len(pixels)
