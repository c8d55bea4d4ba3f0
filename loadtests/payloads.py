"""Make real image payloads for the load tests: encoded files plus the same pixels as a tensor.

    python -m loadtests.payloads --models models --model digits --out loadtests/results/payloads

Grayscale models get scikit-learn's bundled handwritten digits (8x8 scans, upscaled); RGB models
get crops of the two photographs bundled with scikit-learn. Nothing is downloaded. The input size
and colour mode come from the model's ``metadata.json``, so every payload is valid for the model.

Writes ``OUT/images/NNN.png|jpg``, ``OUT/pixels.npy`` (uint8 ``[N, H, W, C]``, the decoded files)
and ``OUT/manifest.json`` (model, input spec, file list).
"""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class InputShape:
    """What a payload must look like for one model."""

    model: str
    input_name: str
    height: int
    width: int
    channels: int

    @property
    def grayscale(self) -> bool:
        return self.channels == 1


def read_input_shape(models: Path, model: str) -> InputShape:
    """The newest version's input spec, read straight from ``metadata.json`` (no service import)."""
    versions = sorted(
        (int(p.name) for p in (models / model).iterdir() if p.name.isdigit() and int(p.name) > 0),
    )
    if not versions:
        raise SystemExit(f"payloads: no published version of {model!r} in {models}")
    meta = json.loads((models / model / str(versions[-1]) / "metadata.json").read_text())
    spec = meta["input"]
    return InputShape(model, spec["name"], spec["height"], spec["width"], spec["channels"])


def _digit_images(count: int, size: tuple[int, int], seed: int) -> list[Image.Image]:
    from sklearn.datasets import load_digits

    digits = load_digits().images  # [1797, 8, 8], 0..16, white ink on black
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(digits), size=count, replace=count > len(digits))
    out = []
    for i in picks:
        pixels = (digits[i] * (255.0 / 16.0)).astype(np.uint8)
        out.append(Image.fromarray(pixels, mode="L").resize(size, Image.Resampling.BILINEAR))
    return out


def photo_crops(count: int, size: tuple[int, int], seed: int) -> Iterator[Image.Image]:
    """``count`` random square crops of the two sample photographs, alternating between them
    (even ``k``: the first), resized to ``size``; one at a time, so thousands fit in memory."""
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images  # two 427x640 RGB photographs
    rng = np.random.default_rng(seed)
    for k in range(count):
        photo = photos[k % len(photos)]
        side = int(rng.integers(min(photo.shape[:2]) // 3, min(photo.shape[:2])))
        top = int(rng.integers(0, photo.shape[0] - side + 1))
        left = int(rng.integers(0, photo.shape[1] - side + 1))
        crop = Image.fromarray(photo[top : top + side, left : left + side])
        yield crop.resize(size, Image.Resampling.BILINEAR)


def _photo_crops(count: int, size: tuple[int, int], seed: int) -> list[Image.Image]:
    return list(photo_crops(count, size, seed))


def encode(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def make_payloads(shape: InputShape, out: Path, count: int = 32, seed: int = 0) -> Path:
    """Write ``count`` encoded images and their decoded pixels for ``shape``; returns ``out``."""
    size = (shape.width, shape.height)
    images = (_digit_images if shape.grayscale else _photo_crops)(count, size, seed)
    fmt, ext = ("PNG", "png") if shape.grayscale else ("JPEG", "jpg")
    (out / "images").mkdir(parents=True, exist_ok=True)
    files, pixels = [], []
    for k, image in enumerate(images):
        data = encode(image, fmt)
        name = f"images/{k:03d}.{ext}"
        (out / name).write_bytes(data)
        files.append(name)
        decoded = np.asarray(
            Image.open(io.BytesIO(data)).convert("L" if shape.grayscale else "RGB")
        )
        pixels.append(decoded.reshape(shape.height, shape.width, shape.channels))
    np.save(out / "pixels.npy", np.stack(pixels).astype(np.uint8))
    manifest = {**asdict(shape), "format": fmt, "files": files}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return out


def write_photo_dataset(out: Path, per_class: int = 40, size: int = 224, seed: int = 1) -> Path:
    """A two-class RGB training set (class folders of JPEG crops, one photograph per class)."""
    from sklearn.datasets import load_sample_images

    for label, _photo in zip(("china", "flower"), load_sample_images().images, strict=True):
        folder = out / label
        folder.mkdir(parents=True, exist_ok=True)
        crops = _photo_crops(2 * per_class, (size, size), seed)[label == "flower" :: 2]
        for k, crop in enumerate(crops):
            (folder / f"{k:03d}.jpg").write_bytes(encode(crop, "JPEG"))
    return out


@dataclass(frozen=True)
class Payloads:
    """Loaded payloads: encoded files and pixels, ready to send."""

    shape: InputShape
    content_type: str
    files: list[bytes]
    pixels: np.ndarray  # uint8 [N, H, W, C]

    @classmethod
    def load(cls, folder: Path) -> Payloads:
        manifest = json.loads((folder / "manifest.json").read_text())
        shape = InputShape(**{k: manifest[k] for k in InputShape.__dataclass_fields__})
        ctype = "image/png" if manifest["format"] == "PNG" else "image/jpeg"
        files = [(folder / name).read_bytes() for name in manifest["files"]]
        return cls(shape, ctype, files, np.load(folder / "pixels.npy"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--models", type=Path, default=Path("models"), help="model repository")
    parser.add_argument("--model", default="digits", help="model name in the repository")
    parser.add_argument("--out", type=Path, required=True, help="folder to write the payloads to")
    parser.add_argument("--count", type=int, default=32, help="how many distinct images")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    shape = read_input_shape(args.models, args.model)
    make_payloads(shape, args.out, args.count, args.seed)
    print(
        f"payloads: {args.count} {shape.height}x{shape.width}x{shape.channels} images in {args.out}"
    )


if __name__ == "__main__":
    main()
