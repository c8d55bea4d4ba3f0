"""Request parameters and names, parsed and validated once for every route and wire.

Values arrive as JSON (REST, /classify), as typed protobuf parameters (gRPC) or as strings
(gRPC ``string_param``, multipart form fields). The rules are the same for all of them: an
integer is an integer (``2.5`` and ``true`` are refused), numbers are finite, a list of numbers
may also be written as ``"0.3,0.5"`` or ``"[0.3, 0.5]"``, and unknown names are refused with a
message that names them, so a typo such as ``topk`` never passes silently.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from service.errors import InvalidInput
from service.types import InferOptions

# Parameters of an inference request (both wires) and what each means, for error messages.
OPTION_PARAMETERS = ("top_k", "threshold", "target_precision", "target_recall", "labels")
MAX_NAME_LENGTH = 256
_DIGITS = re.compile(r"[0-9]{1,18}")  # ASCII only: str.isdigit() accepts "²", int() does not


def check_known(given: Iterable[str], known: Iterable[str], what: str) -> None:
    """Refuse names that are not in ``known`` (typos such as ``topk``), naming them."""
    known = tuple(known)
    unknown = sorted(str(k) for k in given if k not in known)
    if unknown:
        raise InvalidInput(
            f"unknown {what} {', '.join(repr(u) for u in unknown)}: "
            f"this server accepts {', '.join(known)}"
        )


def model_name(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidInput("the model name must be a non-empty string")
    if len(value) > MAX_NAME_LENGTH:
        raise InvalidInput(
            f"the model name is {len(value)} characters long, over the limit of {MAX_NAME_LENGTH}"
        )
    return value


def version(value: Any) -> int | None:
    """``None``/``""`` (the newest ready version) or a positive integer, as int or digits."""
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    if isinstance(value, str) and _DIGITS.fullmatch(value) and int(value) >= 1:
        return int(value)
    shown = value if not isinstance(value, str) else value[:40]
    raise InvalidInput(f"model version {shown!r} is not a positive integer")


def integer(value: Any, what: str, minimum: int = 1) -> int:
    if isinstance(value, str) and _DIGITS.fullmatch(value.strip()):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{what} must be an integer, got {short(value)}")
    if value < minimum:
        raise InvalidInput(f"{what} must be at least {minimum}, got {value}")
    return value


def unit(value: Any, what: str) -> float:
    """A finite number in [0, 1] (a probability, a threshold or a target)."""
    if isinstance(value, str):
        value = _float_text(value, what)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(f"{what} must be a number in [0, 1], got {short(value)}")
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise InvalidInput(f"{what} must be a number in [0, 1], got {short(value)}")
    return float(value)


def boolean(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput(f"{what} must be true or false, got {short(value)}")
    return value


def items(value: Any, what: str) -> list[Any]:
    """A flat list: a JSON list, or a string "a,b" / "[a, b]"; nesting is refused."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        parts = [p.strip() for p in text.split(",")]
        parts = [p[1:-1] if len(p) > 1 and p[0] == p[-1] == '"' else p for p in parts]
        values: list[Any] = [p for p in parts if p]
    elif isinstance(value, list | tuple):
        values = list(value)
    else:
        values = [value]
    if any(isinstance(v, list | tuple | dict) or "[" in str(v) for v in values):
        raise InvalidInput(f"{what} must be a flat list, not nested lists")
    return values


def options(params: Mapping[str, Any]) -> InferOptions:
    """The postprocessing options of a request (``OPTION_PARAMETERS``); absent values are None."""
    get = {k: v for k, v in params.items() if v is not None and v != ""}.get
    threshold: Any = get("threshold")
    if threshold is not None:
        values = [unit(v, "threshold") for v in items(threshold, "threshold")]
        if not values:
            raise InvalidInput("threshold is empty: give one number, or one per class")
        threshold = values[0] if len(values) == 1 else values  # one value: every class
    labels = get("labels")
    truth = None if labels is None else [_truth(v) for v in items(labels, "labels")]
    return InferOptions(
        top_k=None if get("top_k") is None else integer(get("top_k"), "top_k"),
        threshold=threshold,
        target_precision=_opt_unit(get("target_precision"), "target_precision"),
        target_recall=_opt_unit(get("target_recall"), "target_recall"),
        ground_truth=truth,
    )


def _truth(value: Any) -> str | int:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise InvalidInput(f"labels must be label names (or class indices), got {short(value)}")


def _opt_unit(value: Any, what: str) -> float | None:
    return None if value is None else unit(value, what)


def _float_text(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InvalidInput(f"{what} must be a number, got {short(text)}") from None
    if not math.isfinite(value):
        raise InvalidInput(f"{what} must be a finite number, got {short(text)}")
    return value


def short(value: Any) -> str:
    """A value as an error message shows it: its repr, cut at 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
