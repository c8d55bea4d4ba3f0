"""A version whose thresholds were given, not calibrated (an import without labelled data)."""

from __future__ import annotations

import numpy as np
import pytest

from contract.metadata import ModelMetadata
from service.errors import InvalidInput
from service.postprocess import Postprocessor
from service.types import InferOptions
from tests.helpers.models import LABELS, metadata


@pytest.fixture
def post() -> Postprocessor:
    meta = metadata("fixed", 1, "0" * 64)
    meta["metrics"] = None
    meta["thresholds"] = {
        "policy": "fixed",
        "per_class": [{"label": label, "threshold": 0.5} for label in LABELS],
        "calibrated": False,
    }
    return Postprocessor(ModelMetadata.model_validate(meta), default_top_k=1)


def test_default_thresholds_say_they_are_fixed(post: Postprocessor) -> None:
    thresholds, source = post.thresholds(InferOptions())
    assert source == "fixed" and thresholds.tolist() == [0.5] * 3


@pytest.mark.parametrize("option", ["target_precision", "target_recall"])
def test_retargeting_without_curves_is_a_clear_400(post: Postprocessor, option: str) -> None:
    with pytest.raises(InvalidInput, match="no calibration curves") as caught:
        post.thresholds(InferOptions(**{option: 0.9}))
    assert caught.value.http_status == 400 and option in str(caught.value)


def test_an_explicit_threshold_still_works(post: Postprocessor) -> None:
    thresholds, source = post.thresholds(InferOptions(threshold=0.7))
    assert source == "request" and np.allclose(thresholds, 0.7)
