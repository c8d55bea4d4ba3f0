"""GET /models/{name}/{version}/thresholds: the thresholds a target would give, and what holds.

The page re-labels images it already classified from their stored probabilities: it needs the
thresholds a ``target_precision`` / ``target_recall`` gives, and per class whether that target
is certified, its lower bound and support, and what an uncertified class would need. The rule
is the one training and ``/classify`` use (``contract.calibration.choose``) on the calibration
counts in the version's metadata, so the thresholds equal those ``/classify`` applies.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from contract.calibration import CurveCounts, choose, choose_by_estimate
from contract.metadata import CalibrationCurve, ModelMetadata
from service.errors import InvalidInput
from service.types import ModelInfo


def _target(request: Request) -> tuple[str, float]:
    given = {m: request.query_params.get(f"target_{m}") for m in ("precision", "recall")}
    given = {m: v for m, v in given.items() if v not in (None, "")}
    if len(given) != 1:
        raise InvalidInput("give exactly one of target_precision and target_recall")
    ((metric, text),) = given.items()
    try:
        value = float(text)
    except ValueError:
        raise InvalidInput(f"target_{metric} must be a number in [0, 1], got {text!r}") from None
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise InvalidInput(f"target_{metric} must be in [0, 1], got {text}")
    return metric, value


def _shortest(value: float) -> float:
    # The float32 the server applies, written as /classify writes it.
    return float(str(np.float32(value)))


def class_choice(
    label: str, curve: CalibrationCurve | None, metric: str, target: float, confidence: float
) -> dict[str, Any]:
    """One class at ``metric >= target``: threshold, validation P/R there, bound, certified."""
    if curve is None or not curve.thresholds:
        return {"label": label, "threshold": None, "certified": False}
    if curve.tp is None or curve.predicted is None or curve.positives is None:
        # No counts (older or imported metadata): point estimates only, nothing certified.
        i = choose_by_estimate(
            np.asarray(curve.precision),
            np.asarray(curve.recall),
            metric,
            target,
        )
        return {"label": label, "threshold": _shortest(curve.thresholds[i]),
                "val_precision": curve.precision[i], "val_recall": curve.recall[i],
                "certified": False, "lower_bound": None, "support": None,
                "best_certified": None, "needed": None}  # fmt: skip
    counts = CurveCounts(
        np.asarray(curve.thresholds), np.asarray(curve.tp), np.asarray(curve.predicted),
        curve.positives,
    )  # fmt: skip
    choice = choose(counts, metric, target, confidence)
    i = choice.index
    return {
        "label": label,
        "threshold": _shortest(counts.thresholds[i]),
        "val_precision": float(counts.precision[i]),
        "val_recall": float(counts.recall[i]),
        "certified": choice.certified,
        "lower_bound": choice.lower_bound,
        "support": choice.support,
        "best_certified": choice.best_certified,
        "needed": choice.needed,
    }


def choices(meta: ModelMetadata, metric: str, target: float) -> dict[str, Any]:
    confidence = meta.thresholds.bound_confidence
    curves = meta.thresholds.curves
    return {
        "policy": metric,
        "target": target,
        "confidence": confidence,
        "per_class": [
            class_choice(label, curves.get(label), metric, target, confidence)
            for label in meta.labels
        ],
    }


# Sync: Starlette runs it in its thread pool, off the loop that carries inference.
def retargeted_thresholds(request: Request) -> Response:
    """GET /models/{name}/{version}/thresholds?target_precision=0.99 (or target_recall)."""
    info: ModelInfo = request.app.state.engine.model_info(
        request.path_params["name"], request.path_params["version"]
    )
    metric, target = _target(request)
    if info.metadata is None or not info.metadata.thresholds.curves:
        raise InvalidInput(
            f"model {info.name} v{info.version} has no calibration curves to re-target from"
        )
    body = choices(info.metadata, metric, target)
    return JSONResponse({"name": info.name, "version": info.version, **body})
