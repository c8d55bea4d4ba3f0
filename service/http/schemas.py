"""The shapes of Visor's HTTP requests and answers: BentoML's specs and the OpenAPI document's.

The handlers read and write JSON themselves (``wire.py``, ``v2.py``, ``reports.py``): these models
describe it, reusing the metadata contract where a shape already exists there. ``ClassifyInput``
hands BentoML's handler the raw request, so no image is copied into a temporary file or a model.
Answers are closed (``additionalProperties: false``), so the tests that check real answers
against the document also catch a field the server sends but the document does not describe.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from contract.metadata import InputSpec, TestMetrics, Thresholds
from service.http.bento import PassRequest
from service.types import ModelStatus

# every ``VisorError.reason`` (service/errors.py); a test keeps the two lists equal
ErrorCode = Literal[
    "invalid_input",
    "unauthenticated",
    "not_found",
    "unknown_request",
    "already_recorded",
    "too_large",
    "queue_full",
    "unavailable",
    "deadline_exceeded",
    "internal",
]
_GIVEN = {"not": {"type": "null"}}
# the engine takes at most one of these per request (service/postprocess.py); null: not given
ONE_THRESHOLD_OPTION = {
    "anyOf": [
        {"required": list(pair), "properties": dict.fromkeys(pair, _GIVEN)}
        for pair in (
            ("threshold", "target_precision"),
            ("threshold", "target_recall"),
            ("target_precision", "target_recall"),
        )
    ],
    "description": "At most one of threshold, target_precision and target_recall.",
}


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ClassifyInput(PassRequest):
    """JSON form; the same fields work as multipart/form-data with one file part per image."""

    model_config = ConfigDict(json_schema_extra={"not": ONE_THRESHOLD_OPTION})

    images: list[str] = Field(description="Encoded images (PNG, JPEG, ...), base64.")
    model: str | None = Field(None, description="Model name; optional when one model is served.")
    version: int | None = Field(
        None, ge=1, description="Model version; default the newest ready one."
    )
    top_k: int | None = Field(None, ge=1, description="How many best classes to list per image.")
    threshold: float | list[float] | None = Field(
        None, description="One threshold for every class, or one per class in label order."
    )
    target_precision: float | None = Field(
        None, ge=0, le=1, description="Re-target thresholds to this precision."
    )
    target_recall: float | None = Field(
        None, ge=0, le=1, description="Re-target thresholds to this recall."
    )
    labels: list[str] | None = Field(None, description="True label per image: adds batch metrics.")


class EvaluateInput(ClassifyInput):
    """Labelled images: ``labels`` is required, one per image."""

    labels: list[str] = Field(description="True label per image.")  # type: ignore[assignment]


class TopClass(BaseModel):
    label: str
    score: float


class Prediction(BaseModel):
    probabilities: dict[str, float]
    top_k: list[TopClass]
    labels: list[str] = Field(description="Labels whose probability reaches their threshold.")


class ClassifyOutput(BaseModel):
    model: str
    version: int
    request_id: str = Field(description="The server's id of this request: the key of feedback.")
    thresholds: dict[str, float] = Field(description="The threshold applied per label.")
    predictions: list[Prediction]
    metrics: dict[str, Any] | None = Field(None, description="When 'labels' were given.")


class EvaluateOutput(BaseModel):
    model: str
    version: int
    request_id: str
    thresholds: dict[str, float]
    accuracy: float
    per_class: dict[str, dict[str, float]]
    macro_precision: float
    macro_recall: float
    macro_f1: float
    macro_labels: list[str] = Field(
        description="Labels true or predicted in the batch: the macro averages cover these."
    )
    confusion_matrix: list[list[int]] = Field(description="Rows: true label, columns: predicted.")
    samples: int


class FeedbackInput(_Closed):
    """The ground truth of an answered request, keyed by the ``request_id`` it returned."""

    request_id: str = Field(description="The id a /classify, /evaluate or infer answer gave.")
    labels: list[str | int | None] = Field(
        description="One true label per image of that request (null: unknown), or one with `index`."
    )
    index: int | None = Field(None, ge=0, description="The image the single label is for.")


class FeedbackOutput(_Closed):
    request_id: str
    model: str
    version: int
    accepted: int = Field(description="Images whose ground truth was recorded.")


class ErrorBody(_Closed):
    """Every refusal Visor answers itself: a sentence to act on and a stable code."""

    error: str = Field(description="What was wrong, in a sentence a user can act on.")
    code: ErrorCode = Field(description="Stable machine-readable reason.")


class UnexpectedErrorBody(_Closed):
    """A 500: Visor's own errors carry ``code``; BentoML's catch-all answer has ``error`` only."""

    error: str
    code: ErrorCode | None = None


class ModelEntry(_Closed):
    """One version in GET /models. ``labels`` onwards are absent when metadata.json is invalid."""

    name: str
    version: int
    status: ModelStatus
    reason: str | None = Field(None, description="Why the version failed; absent otherwise.")
    backend: str
    device: str = Field(description="The execution provider actually in use.")
    max_batch_size: int
    labels: list[str] | None = None
    input: InputSpec | None = None
    thresholds: Thresholds | None = Field(
        None, description="Without `curves`: GET /models/{name}/{version}/card has them."
    )
    test_metrics: TestMetrics | None = None


class Limits(_Closed):
    """What one request may carry: clients split larger jobs into parts within it."""

    max_images_per_request: int = Field(description="VISOR_MAX_IMAGES_PER_REQUEST.")


class ClassChoice(_Closed):
    """One class at a re-targeted level: the threshold /classify would apply, and what holds."""

    label: str
    threshold: float | None = Field(description="null when the class has no calibration curve.")
    val_precision: float | None = None
    val_recall: float | None = None
    certified: bool = Field(description="The lower bound reaches the target.")
    lower_bound: float | None = Field(
        None, description="Clopper-Pearson lower bound of the targeted metric at the threshold."
    )
    support: int | None = Field(None, description="Calibration images behind the bound.")
    best_certified: float | None = Field(
        None, description="The highest level certifiable with the calibration data."
    )
    needed: int | None = Field(
        None, description="When uncertified: about how many images of the class would certify."
    )


class LiveEstimate(_Closed):
    value: float | None = Field(description="Point estimate; null while its support is 0.")
    lower_bound: float | None = Field(description="One-sided Clopper-Pearson at `confidence`.")
    upper_bound: float | None
    support: int = Field(description="Predicted positives (precision) or true images (recall).")


class LiveClass(_Closed):
    label: str
    tp: int
    fp: int
    fn: int
    precision: LiveEstimate
    recall: LiveEstimate


class LiveDrift(_Closed):
    samples: int = Field(description="Served images in the drift window.")
    min_samples: int
    label_psi: float | None = Field(description="null until the window holds min_samples.")
    confidence_psi: float | None


class LiveView(_Closed):
    """GET /models/{name}/{version}/live: the answering worker's feedback window and drift."""

    name: str
    version: int
    pid: int = Field(description="The worker whose windows these are.")
    feedback: int = Field(description="Feedback images in the window.")
    policy: Literal["precision", "recall", "fixed"]
    target: float | None
    confidence: float
    per_class: list[LiveClass]
    drift: LiveDrift | None = Field(description="null when the metadata has no reference.")


class RolloutRule(_Closed):
    confidence: float
    margin: float
    min_feedback: int


class RolloutVerdict(_Closed):
    action: Literal["promote", "roll_back", "wait"]
    reason: str


class RolloutDecision(_Closed):
    action: Literal["promote", "roll_back"]
    reason: str
    at: str = Field(description="When it was decided (UTC, ISO 8601).")
    by: str = Field(description="The process that decided (host-pid-random).")


class RolloutComparison(_Closed):
    """Candidate and current precision of one class (or overall) and the rule's bounds."""

    label: str
    candidate: float | None
    candidate_support: int
    current: float | None
    current_support: int
    lower: float | None = Field(description="Of candidate - current, at `confidence`.")
    upper: float | None = Field(description="Of candidate - current, at the roll-back level.")


class RolloutRole(_Closed):
    precision: LiveEstimate
    recall: LiveEstimate


class RolloutDifference(_Closed):
    lower: float | None
    upper: float | None


class RolloutClass(_Closed):
    label: str
    current: RolloutRole
    candidate: RolloutRole
    difference: RolloutDifference


class RolloutAgreement(_Closed):
    compared: int = Field(description="Images both versions answered (shadow).")
    top1: float
    labels: float


class RolloutFeedback(_Closed):
    current: int
    candidate: int


class RolloutEvidence(_Closed):
    """The fleet's feedback on each version's answers since the rollout began."""

    feedback: RolloutFeedback
    overall: RolloutComparison
    per_class: list[RolloutClass]
    agreement: RolloutAgreement | None


class RolloutView(_Closed):
    """One model's rollout (docs/service.md "Rollouts"); absent for a model without one."""

    policy: Literal["newest", "shadow", "canary"]
    state: Literal["evaluating", "promoted", "rolled_back"] | None
    current: int | None = None
    candidate: int | None = None
    share: float | None = None
    auto: bool | None = None
    rule: RolloutRule | None = None
    decision: RolloutDecision | None = None
    verdict: RolloutVerdict | None = None
    evidence: RolloutEvidence | None = None
    shared: bool | None = Field(
        None, description="Whether the evidence is the fleet's (VISOR_ROLLOUT_STATE answers)."
    )
    problem: str | None = Field(None, description="Why rollout.yaml or the pair cannot serve.")


class ModelList(_Closed):
    models: list[ModelEntry]
    rollouts: dict[str, RolloutView] = Field(
        default_factory=dict, description="Per model with a rollout.yaml: its rollout."
    )
    limits: Limits


class RetargetedThresholds(_Closed):
    """GET /models/{name}/{version}/thresholds: per class, the thresholds a target gives."""

    name: str
    version: int
    policy: Literal["precision", "recall"]
    target: float
    confidence: float
    per_class: list[ClassChoice]


class ReportLinks(_Closed):
    """URLs of what training wrote into the version's ``report/`` folder."""

    images: dict[str, str] = Field(description="Figure name (file stem) → URL of the PNG.")
    model_card: str | None = Field(description="URL of MODEL_CARD.md; null when absent.")
    model_card_html: str | None = Field(
        None, description="URL of MODEL_CARD.md rendered as HTML (raw HTML escaped)."
    )


class ModelCard(_Closed):
    """One version in full: thresholds with their calibration curves, metrics, report files."""

    name: str
    version: int
    status: ModelStatus
    reason: str | None = None
    labels: list[str]
    thresholds: Thresholds | None = Field(description="null when metadata.json is invalid.")
    test_metrics: TestMetrics | None
    report: ReportLinks


class Live(_Closed):
    live: bool


class Ready(_Closed):
    ready: bool


class ServerMetadata(_Closed):
    name: str
    version: str
    extensions: list[str]


class TensorMetadata(_Closed):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1 marks a variable dimension (the batch).")


class ModelMetadataV2(_Closed):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: dict[str, Any]


class RequestInput(BaseModel):
    name: str
    shape: list[int]
    datatype: Literal["BYTES", "UINT8", "FP32"] = Field(
        description="BYTES: encoded images (base64 in JSON); UINT8/FP32: pixels [N,H,W,C]."
    )
    parameters: dict[str, Any] | None = Field(
        None, description='{"binary_data_size": n} when the data follows the JSON header.'
    )
    data: list[Any] | None = None


class RequestOutput(BaseModel):
    name: Literal["probabilities", "labels"]
    parameters: dict[str, Any] | None = Field(
        None, description='{"classification": k} → "score:index:label" strings; "binary_data".'
    )


class InferRequest(BaseModel):
    """Open Inference Protocol request; ``parameters``: threshold, target_precision/recall,
    top_k, labels, binary_data_output."""

    model_config = ConfigDict(title="InferRequest")

    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInput]
    outputs: list[RequestOutput] | None = None


class ResponseOutput(_Closed):
    name: str
    datatype: str
    shape: list[int]
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class InferResponse(_Closed):
    model_name: str
    model_version: str
    id: str | None = None
    parameters: dict[str, Any] = Field(description="threshold_source; metrics with labels.")
    outputs: list[ResponseOutput]
