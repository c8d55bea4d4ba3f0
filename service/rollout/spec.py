"""``<models>/<name>/rollout.yaml``: how a model's new version earns its traffic.

Read by the repository at each poll, beside the versions, so a change to it takes effect as a new
version does. No file means ``policy: newest`` (the newest ready version answers), as before.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from service.storage import ROLLOUT_FILE as FILE

log = logging.getLogger(__name__)


class RolloutSpec(BaseModel):
    """One model's rollout policy and the parameters of its decision rule (docs/service.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    policy: Literal["newest", "shadow", "canary"] = Field(
        "newest",
        description="newest: the newest ready version answers. shadow: the current version "
        "answers and the candidate sees every request off the request path. canary: the "
        "candidate answers `share` of the requests, the current version the rest.",
    )
    share: float = Field(
        0.1, gt=0, le=1, description="canary: the fraction of requests the candidate answers."
    )
    current: int | None = Field(
        None, ge=1, description="The version serving today (default: the newest below candidate)."
    )
    candidate: int | None = Field(
        None, ge=1, description="The version on trial (default: the newest version)."
    )
    confidence: float = Field(
        0.95, gt=0.5, lt=1, description="Confidence of every comparison the rule makes."
    )
    margin: float = Field(
        0.05,
        ge=0,
        lt=1,
        description="How much lower than the current version's a class's precision may be and "
        "still count as not worse (non-inferiority margin).",
    )
    min_feedback: int = Field(
        200, ge=1, description="Feedback images on the candidate's answers before promotion."
    )
    auto: bool = Field(
        True, description="Act on the rule (promote, roll back); false: report the verdict only."
    )

    def pair(self, versions: list[int]) -> tuple[int, int] | None:
        """(current, candidate) among the folder's ``versions``, or None when there is no pair."""
        if self.policy == "newest" or not versions:
            return None
        candidate = self.candidate if self.candidate is not None else max(versions)
        older = [v for v in versions if v < candidate]
        current = self.current if self.current is not None else max(older, default=None)
        if current is None or current == candidate:
            return None
        return current, candidate


class SpecError(ValueError):
    """rollout.yaml exists but is not a valid spec; ``str()`` says what to fix."""


def read_spec(model_dir: Path) -> RolloutSpec | None:
    """The spec in ``model_dir/rollout.yaml``; None without one; SpecError when it is invalid."""
    path = model_dir / FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SpecError(f"{path}: cannot read it ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path} is not UTF-8 text (byte {exc.start}): save it as UTF-8") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"{path} is not YAML: {' '.join(str(exc).split())}") from None
    if data is None:
        return RolloutSpec()
    if not isinstance(data, dict):
        raise SpecError(f"{path} must be a mapping of the fields of docs/service.md#rollouts")
    try:
        return RolloutSpec.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'file'}: {e['msg']}" for e in exc.errors()
        )
        raise SpecError(f"{path}: {problems}") from None
