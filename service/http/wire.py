"""HTTP wire format of /classify and /evaluate: request → (images, options), answer → JSON bytes.

Two request encodings, same fields:
- ``multipart/form-data``: one file part per image (any field name), options as form fields;
  ``labels`` and a per-class ``threshold`` as repeated fields or comma-separated.
- ``application/json``: ``{"images": ["<base64>", ...], "model": ..., "labels": [...], ...}``.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from collections.abc import Callable
from typing import Any

from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request

from service.errors import InvalidInput
from service.http.tensors import load_json
from service.protocol import InferRequest, TensorData
from service.types import Classification, ModelInfo


async def read_request(
    request: Request, max_images: int, default_model: Callable[[], str]
) -> InferRequest:
    """A /classify or /evaluate body (multipart or JSON) → the protocol layer's request: the
    images as one BYTES input, the other fields as parameters (the engine validates them all,
    unknown names included)."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type == "multipart/form-data":
        images, fields = await _read_multipart(request, max_images)
    elif media_type in ("application/json", ""):
        images, fields = await _read_json(request)
    else:
        raise InvalidInput(
            f"Unsupported Content-Type '{media_type}': send multipart/form-data or application/json."
        )
    if not images:
        raise InvalidInput("The request holds no image: attach files or give 'images' (base64).")
    model = fields.pop("model", None)
    version = fields.pop("version", None)
    image = TensorData(name="image", datatype="BYTES", shape=[len(images)], values=images)
    return InferRequest(
        model=default_model() if model in (None, "") else model,
        version=version,
        inputs=[image],
        parameters=fields,
    )


async def _read_multipart(request: Request, max_images: int) -> tuple[list[bytes], dict[str, Any]]:
    try:
        form: FormData = await request.form(max_files=max_images, max_fields=64)
    except (MultiPartException, HTTPException) as err:
        # Starlette turns parser errors (too many files, bad boundary) into HTTPException.
        detail = getattr(err, "detail", None) or getattr(err, "message", "")
        raise InvalidInput(f"The multipart body could not be read: {detail}.") from err
    images: list[bytes] = []
    fields: dict[str, Any] = {}
    try:
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                images.append(await value.read())
            elif name in ("labels", "threshold"):
                # An empty field (Swagger UI's "Send empty value") means "not given".
                if parts := [p for p in value.split(",") if p.strip()]:
                    fields.setdefault(name, []).extend(parts)
            else:
                fields[name] = value
    finally:
        await form.close()
    if len(fields.get("threshold", ())) == 1:
        fields["threshold"] = fields["threshold"][0]
    return images, fields


async def _read_json(request: Request) -> tuple[list[bytes], dict[str, Any]]:
    fields = load_json(await request.body(), "body")
    if not isinstance(fields, dict):
        raise InvalidInput("The JSON body must be an object with an 'images' list.")
    if "images" in fields and "image" in fields:
        raise InvalidInput("Give 'images' (a list) or 'image' (one), not both.")
    raw = fields.pop("images", [fields.pop("image")] if "image" in fields else [])
    if not isinstance(raw, list) or not all(isinstance(i, str) for i in raw):
        raise InvalidInput("'images' must be a list of base64 strings.")
    return [_b64(i, n) for n, i in enumerate(raw)], fields


def _b64(text: str, index: int) -> bytes:
    # Accept data URLs ("data:image/png;base64,...") as browsers produce them.
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as err:
        raise InvalidInput(f"images[{index}] is not valid base64.") from err


def classification_body(result: Classification) -> bytes:
    """The /classify answer: per image probabilities by label, top-k and thresholded labels."""
    labels = result.labels
    predictions = [
        {
            "probabilities": dict(zip(labels, row)),
            "top_k": [{"label": c.label, "score": c.score} for c in top],
            "labels": list(predicted),
        }
        for row, top, predicted in zip(
            result.probabilities.tolist(), result.top_k, result.predicted
        )
    ]
    body: dict[str, Any] = {
        "model": result.model,
        "version": result.version,
        "request_id": result.request_id,
        "thresholds": dict(zip(labels, _floats(result.thresholds))),
        "predictions": predictions,
    }
    if result.certified is not None:
        body["certified"] = dict(zip(labels, result.certified.tolist()))
    if result.metrics is not None:
        body["metrics"] = metrics_dict(result)
    return json.dumps(body).encode()


def evaluation_body(result: Classification) -> bytes:
    """The /evaluate answer: the batch metrics at the thresholds that were applied."""
    body = {
        "model": result.model,
        "version": result.version,
        "request_id": result.request_id,
        "thresholds": dict(zip(result.labels, _floats(result.thresholds))),
        **metrics_dict(result),
    }
    return json.dumps(body).encode()


def metrics_dict(result: Classification) -> dict[str, Any]:
    if result.metrics is None:
        raise InvalidInput("Evaluation needs the true 'labels', one per image.")
    return dataclasses.asdict(result.metrics)


def model_entry(info: ModelInfo) -> dict[str, Any]:
    """One /models entry: status, device, labels, input spec, thresholds, test metrics."""
    entry: dict[str, Any] = {
        "name": info.name,
        "version": info.version,
        "status": info.status.value,
        "backend": info.backend,
        "device": info.device,
        "max_batch_size": info.max_batch_size,
    }
    if info.reason:
        entry["reason"] = info.reason
    meta = info.metadata
    if meta is not None:
        entry["labels"] = meta.labels
        entry["input"] = meta.input.model_dump(mode="json")
        entry["thresholds"] = meta.thresholds.model_dump(mode="json", exclude={"curves"})
        entry["test_metrics"] = meta.metrics.model_dump(mode="json") if meta.metrics else None
    return entry


def _floats(values: Any) -> list[float]:
    # str() of a float32 is its shortest repr: 0.3, not 0.30000001192092896.
    return [float(str(v)) for v in values]
