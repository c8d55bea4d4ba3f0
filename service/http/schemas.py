"""Request/response shapes of /classify and /evaluate, for BentoML's OpenAPI page.

The handlers parse bodies themselves (see ``wire.py``): these classes document the JSON form and
hand the raw request through, so no image is copied into a temporary file or a pydantic model.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from service.http.bento import PassRequest


class ClassifyInput(PassRequest):
    """JSON form; the same fields work as multipart/form-data with one file part per image."""

    images: list[str] = Field(description="Encoded images (PNG, JPEG, ...), base64.")
    model: str | None = Field(None, description="Model name; optional when one model is served.")
    version: int | None = Field(None, description="Model version; default the newest ready one.")
    top_k: int | None = Field(None, ge=1, description="How many best classes to list per image.")
    threshold: float | list[float] | None = Field(
        None, description="One threshold for every class, or one per class in label order."
    )
    target_precision: float | None = Field(
        None, description="Re-target thresholds to this precision."
    )
    target_recall: float | None = Field(None, description="Re-target thresholds to this recall.")
    labels: list[str] | None = Field(None, description="True label per image: adds batch metrics.")


class EvaluateInput(ClassifyInput):
    """Labelled images: ``labels`` is required, one per image."""


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
