"""The model repository contract: ``models/<name>/<version>/metadata.json``.

training/ writes it, service/ validates it on load and refuses a model that does not match.
This module must stay importable without TensorFlow (the serving image has none).
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SCHEMA_VERSION = 1
METADATA_FILE = "metadata.json"

ColorMode = Literal["grayscale", "rgb"]
ResizeMethod = Literal["bilinear", "nearest", "bicubic", "area", "lanczos3"]
ArtifactKind = Literal["onnx", "savedmodel", "keras_h5"]
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


DEFAULT_CONFIDENCE = 0.95


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(_Strict):
    """The one image input: raw pixels, resizing/normalisation live inside the graph."""

    name: str = Field(description="Input tensor name in the ONNX graph / SavedModel signature.")
    height: int = Field(gt=0)
    width: int = Field(gt=0)
    channels: Literal[1, 3]
    dtype: Literal["float32"] = "float32"
    color_mode: ColorMode
    resize_method: ResizeMethod = Field(description="How training resized decoded images.")
    value_range: tuple[float, float] = (0.0, 255.0)

    @model_validator(mode="after")
    def _channels_match_mode(self) -> InputSpec:
        if (self.color_mode == "grayscale") != (self.channels == 1):
            raise ValueError(
                f"color_mode {self.color_mode!r} does not match {self.channels} channels"
            )
        return self


class OutputSpec(_Strict):
    name: str = Field(description="Output tensor name in the ONNX graph / SavedModel signature.")
    kind: Literal["probabilities", "logits"] = "probabilities"


class CalibrationCurve(_Strict):
    """Calibration precision/recall of one class (one-vs-rest) at increasing thresholds.

    The optional counts let the server compute confidence bounds when it re-targets.
    """

    thresholds: list[float]
    precision: list[float]
    recall: list[float]
    tp: list[int] | None = Field(default=None, description="True positives at each threshold.")
    predicted: list[int] | None = Field(
        default=None, description="Predicted positives (score >= threshold) at each threshold."
    )
    positives: int | None = Field(default=None, ge=0, description="Images of the class.")

    @model_validator(mode="after")
    def _same_length(self) -> CalibrationCurve:
        if not (len(self.thresholds) == len(self.precision) == len(self.recall)):
            raise ValueError("calibration curve arrays differ in length")
        counts = (self.tp, self.predicted, self.positives)
        if any(c is not None for c in counts) and (
            None in counts or not len(self.tp) == len(self.predicted) == len(self.thresholds)
        ):
            raise ValueError("curve counts need tp, predicted and positives, one per threshold")
        return self


class ClassThreshold(_Strict):
    label: str
    threshold: float = Field(ge=0.0, le=1.0)
    val_precision: float | None = Field(
        default=None, description="Precision on the calibration data; None when uncalibrated."
    )
    val_recall: float | None = None
    target_met: bool = Field(
        default=False,
        description="True only when the target is certified (see `certified`); kept so older "
        "readers never take an uncertified class for met.",
    )
    test_precision: float | None = None
    test_recall: float | None = None
    # Statistical guarantee of the targeted metric (precision or recall) at this threshold.
    lower_bound: float | None = Field(
        default=None,
        description="One-sided lower confidence bound of the targeted metric "
        "(Clopper-Pearson at `Thresholds.confidence`).",
    )
    support: int | None = Field(
        default=None,
        description="Calibration images the bound rests on: predicted positives for a precision "
        "target, actual positives for a recall target.",
    )
    certified: bool = Field(
        default=False, description="lower_bound >= target: the target holds at the confidence."
    )
    best_certified: float | None = Field(
        default=None, description="The highest level certifiable with the data at hand."
    )
    needed: int | None = Field(
        default=None,
        description="When uncertified: about how many calibration images of this class would "
        "certify the target if the observed error rate held.",
    )


class Thresholds(_Strict):
    policy: Literal["precision", "recall", "fixed"]
    target: float | None = Field(default=None, ge=0.0, le=1.0)
    per_class: list[ClassThreshold]
    curves: dict[str, CalibrationCurve] = Field(
        default_factory=dict, description="label -> calibration curve, for re-targeting."
    )
    calibrated: bool = Field(
        default=True, description="False: thresholds were given (e.g. an imported model)."
    )
    confidence: float | None = Field(
        default=None, gt=0.0, lt=1.0, description="Confidence level of every lower_bound."
    )
    method: str = Field(default="", description="How the thresholds were chosen, in words.")

    @property
    def bound_confidence(self) -> float:
        """``confidence``, or the 0.95 Visor always used, for metadata that does not state it."""
        return self.confidence if self.confidence is not None else DEFAULT_CONFIDENCE


class Histogram(_Strict):
    edges: list[float] = Field(description="Bin edges, len(fractions) + 1 of them.")
    fractions: list[float]

    @model_validator(mode="after")
    def _shape(self) -> Histogram:
        if len(self.edges) != len(self.fractions) + 1:
            raise ValueError("a histogram needs one more edge than fractions")
        return self


class Reference(_Strict):
    """What served traffic is compared with for drift (population stability index)."""

    split: str = Field(description="Which data: e.g. 'validation'.")
    samples: int
    label_distribution: dict[str, float] = Field(
        description="label -> fraction of images whose top-1 label it is."
    )
    confidence: Histogram = Field(description="Histogram of the top-1 probability.")


class Golden(_Strict):
    """Inputs and the exported model's outputs, re-run at load to catch a corrupted artifact."""

    path: str = Field(description="An .npz with `inputs` and `outputs`, in the version folder.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    tolerance: float = Field(default=1e-4, gt=0.0, description="max |output - stored| allowed.")


class ClassMetrics(_Strict):
    precision: float
    recall: float
    f1: float
    support: int
    roc_auc: float | None = None


class TestMetrics(_Strict):
    accuracy: float
    macro_precision: float
    macro_recall: float
    macro_f1: float
    macro_roc_auc: float | None = None
    per_class: dict[str, ClassMetrics]
    confusion_matrix: list[list[int]] = Field(description="rows: true label, columns: predicted.")
    samples: int


class Artifact(_Strict):
    path: str = Field(
        description="Relative to the version folder (a file or, for savedmodel, a folder)."
    )
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class ParityCheck(_Strict):
    """The rule every artifact passed: per element |p_artifact - p_keras| <= atol + rtol *
    |p_keras|, and the same top-1 label on every check image outside a near-tie."""

    atol: float = Field(ge=0)
    rtol: float = Field(ge=0)
    images: int = Field(ge=0, description="The check batch (test-split images).")
    top1_agreement: dict[ArtifactKind, float] = Field(
        description="Share of check images whose top-1 label equals Keras's."
    )


class ModelMetadata(_Strict):
    schema_version: Literal[1] = SCHEMA_VERSION
    name: str = Field(pattern=NAME_PATTERN)
    version: int = Field(ge=1)
    created: datetime
    labels: list[str] = Field(min_length=2)
    input: InputSpec
    output: OutputSpec
    thresholds: Thresholds
    metrics: TestMetrics | None = Field(
        default=None, description="Test-split metrics; None when no labelled data was given."
    )
    artifacts: dict[ArtifactKind, Artifact]
    onnx_opset: int
    parity: dict[ArtifactKind, float] = Field(
        default_factory=dict, description="max |p_artifact - p_keras| on the check batch."
    )
    parity_check: ParityCheck | None = Field(
        default=None, description="The tolerance that parity was checked at; None: older files."
    )
    reference: Reference | None = None
    golden: Golden | None = None
    frameworks: dict[str, str]
    training: dict = Field(default_factory=dict, description="The training config, as given.")

    @model_validator(mode="after")
    def _consistent(self) -> ModelMetadata:
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("labels are not unique")
        if [c.label for c in self.thresholds.per_class] != self.labels:
            raise ValueError("thresholds.per_class must list every label, in label order")
        if "onnx" not in self.artifacts:
            raise ValueError("an onnx artifact is required")
        return self


def sha256_path(path: Path) -> str:
    """sha256 of a file, or of a folder: over its sorted relative paths and their files' sha256."""
    if path.is_file():
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()
    digest = hashlib.sha256()
    for child in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = child.relative_to(path).as_posix()
        digest.update(f"{rel}\0{sha256_path(child)}\n".encode())
    return digest.hexdigest()


def load_metadata(version_dir: Path) -> ModelMetadata:
    """Read and validate ``metadata.json`` of one version folder (raises pydantic.ValidationError)."""
    return ModelMetadata.model_validate_json((version_dir / METADATA_FILE).read_text())
