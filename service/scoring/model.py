"""One model version scored offline exactly as the server scores it.

Same pieces as a served request: ``decode_image`` (decode, EXIF, colour, resize), the
ONNX Runtime backend with the server's session options, and the ``Postprocessor`` (probabilities
and thresholds, re-targeted as a request would ask). What differs is only that every image is
decoded on its own, so one unreadable file becomes a row with its error instead of failing the
batch it came in.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from contract.metadata import ModelMetadata, load_metadata, sha256_path
from service.backends.onnx import OnnxBackend
from service.decoding import decode_image
from service.errors import VisorError
from service.postprocess import Postprocessor
from service.settings import Settings
from service.types import InferOptions

# Pillow names the in-memory file in its message ("<_io.BytesIO object at 0x7f...>"); the
# address changes from run to run, and rows must be the same whichever engine or run wrote them.
_ADDRESS = re.compile(r"\s*<_io\.BytesIO object at 0x[0-9a-f]+>")


class ScoringError(Exception):
    """The model or an option cannot be used: the CLI prints it in one line."""


def version_dir(path: Path) -> Path:
    """``models/NAME/VERSION`` as given, or the newest version under ``models/NAME``."""
    if (path / "metadata.json").is_file():
        return path
    versions = (
        [p for p in path.iterdir() if p.name.isdigit() and (p / "metadata.json").is_file()]
        if path.is_dir()
        else []
    )
    if not versions:
        raise ScoringError(f"{path} holds no model version (no metadata.json, no NAME/<n>/)")
    return max(versions, key=lambda p: int(p.name))


def load_checked(folder: Path) -> ModelMetadata:
    """The metadata, after checking the ONNX file is the one it describes (as the server does)."""
    try:
        meta = load_metadata(folder)
    except ValidationError as exc:
        raise ScoringError(f"{folder}/metadata.json is invalid: {exc}") from None
    artifact = meta.artifacts["onnx"]
    onnx_path = folder / artifact.path
    if not onnx_path.is_file() or sha256_path(onnx_path) != artifact.sha256:
        raise ScoringError(f"{folder / artifact.path} does not match its sha256 in metadata.json")
    return meta


def error_text(exc: Exception) -> str:
    text = str(exc).removeprefix("image 0 ")  # The server numbers images in a request
    return _ADDRESS.sub("", text).replace("\n", " ")


@dataclass(frozen=True)
class Item:
    """One image to score: its path, and its bytes when the input table carries them."""

    path: str
    content: bytes | None = None


class Scorer:
    """Decode → batch → ONNX Runtime → probabilities, top-1 and thresholded labels, as rows."""

    def __init__(
        self, onnx_path: Path, meta: ModelMetadata, settings: Settings, options: InferOptions
    ) -> None:
        self.meta = meta
        self.settings = settings
        self.backend = OnnxBackend(onnx_path, meta, settings)
        self.post = Postprocessor(meta, default_top_k=1)
        self.thresholds, self.threshold_source = self.post.thresholds(options)

    def decode(self, item: Item) -> np.ndarray | str:
        """uint8 ``[H, W, C]``, or the error text of an unreadable image."""
        try:
            data = item.content if item.content is not None else Path(item.path).read_bytes()
            return decode_image(data, self.meta.input, self.settings.max_image_pixels)
        except VisorError as exc:
            return error_text(exc)
        except OSError as exc:
            return f"cannot read the file: {exc.strerror or exc}"

    def rows(self, items: Sequence[Item], decoded: Sequence[np.ndarray | str]) -> list[dict]:
        """One row per item, in order; decoded images run as one batch."""
        good = [i for i, d in enumerate(decoded) if not isinstance(d, str)]
        probs = np.empty((0, len(self.post.labels)), np.float32)
        if good:
            batch = np.stack([decoded[i] for i in good]).astype(np.float32)
            probs = self.post.probabilities(self.backend.run(batch))
        by_index = dict(zip(good, probs, strict=True))
        return [self._row(item.path, by_index.get(i), decoded[i]) for i, item in enumerate(items)]

    def _row(self, path: str, probs: np.ndarray | None, decoded: np.ndarray | str) -> dict:
        row = {"path": path, "model": self.meta.name, "version": self.meta.version}
        if probs is None:
            return row | {
                "label": None,
                "score": None,
                "labels": [],
                "probabilities": [],
                "error": decoded,
            }
        top = int(np.argmax(probs))
        hits = [
            lab
            for lab, p, t in zip(self.post.labels, probs, self.thresholds, strict=True)
            if p >= t
        ]
        return row | {
            "label": self.post.labels[top],
            "score": float(probs[top]),
            "labels": hits,
            "probabilities": [float(p) for p in probs],
            "error": None,
        }

    def close(self) -> None:
        self.backend.close()


def decode_ahead(
    scorer: Scorer, batches: Iterable[list[Item]], pool: ThreadPoolExecutor
) -> Iterator[tuple[list[Item], list[np.ndarray | str]]]:
    """Batches with their decoded images; the next batch decodes while the caller runs one."""
    pending: tuple[list[Item], list[Future]] | None = None
    for batch in batches:
        submitted = (batch, [pool.submit(scorer.decode, item) for item in batch])
        if pending is not None:
            yield pending[0], [f.result() for f in pending[1]]
        pending = submitted
    if pending is not None:
        yield pending[0], [f.result() for f in pending[1]]


def scoring_settings(intra_op_threads: int, providers: list[str] | None = None) -> Settings:
    """The server's ONNX Runtime settings, for one process that scores alone."""
    extra = {"providers": providers} if providers else {}
    return Settings(
        intra_op_threads=intra_op_threads,
        ort_spin_lone_requests=False,  # Batches here are never lone single images
        _env_file=None,  # type: ignore[call-arg]
        **extra,
    )
