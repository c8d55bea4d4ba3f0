"""Command-line flags derived from the config dataclasses, as ``service serve`` derives its own
from ``Settings``: each default and help text lives once, on its field.

A field declared with :func:`option` becomes a flag (``--field-name`` unless it names another);
its type gives the parser (``bool`` a switch, ``Literal`` the choices, ``Path``/``int``/``float``),
unless the field gives a stricter ``parse``. :func:`from_args` builds the dataclass back from the
parsed flags. Only argparse is imported here, so the config module stays cheap to import.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

_UNSET: Any = dataclasses.MISSING


def option(
    default: Any = _UNSET,
    *,
    help: str,
    flag: str | None = None,
    parse: Callable[[str], Any] | None = None,
    cli_default: Any = _UNSET,
) -> Any:
    """A dataclass field that is also a command-line flag; no default means the flag is required.

    ``cli_default``: the flag's default when it differs from the field's (say, None for "derived
    from another flag", which the command then resolves; the help says how).
    """
    meta = {"help": help, "flag": flag, "parse": parse, "cli_default": cli_default}
    return dataclasses.field(default=default, metadata=meta)


def add_flags(
    group: Any, cls: type, *, skip: tuple[str, ...] = (), overrides: str | None = None
) -> None:
    """One flag per :func:`option` field of ``cls`` (``dest`` is the field name).

    ``overrides``: every flag is optional and absent from the parsed namespace unless given
    (they override values from elsewhere, which ``overrides`` names for the help).
    """
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if "help" not in f.metadata or f.name in skip:
            continue
        kind, meta = _unoptional(hints[f.name]), f.metadata
        required = f.default is _UNSET
        name = meta["flag"] or "--" + f.name.replace("_", "-")
        kwargs: dict[str, Any] = {"dest": f.name, "help": meta["help"]}
        if kind is bool:
            kwargs["action"] = "store_true"
        else:
            if typing.get_origin(kind) is Literal:
                kwargs["choices"] = typing.get_args(kind)
            else:
                kwargs["metavar"] = name.lstrip("-").upper().replace("-", "_")
            kwargs["type"] = meta["parse"] or (kind if kind in (int, float, Path) else str)
            kwargs["required"] = required
            if not required:
                default = f.default if meta["cli_default"] is _UNSET else meta["cli_default"]
                kwargs["default"] = default
                if default is not None:
                    kwargs["help"] += f" (default {default})"
        if overrides is not None:
            kwargs.update(required=False, default=argparse.SUPPRESS)
            kwargs["help"] = f"{meta['help']} (default: {overrides})"
        group.add_argument(name, **kwargs)


def from_args(cls: type, args: argparse.Namespace, **given: Any) -> Any:
    """``cls`` from the parsed flags of its option fields; ``given`` sets or overrides fields."""
    values = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(cls)
        if "help" in f.metadata and f.name not in given and hasattr(args, f.name)
    }
    return cls(**values, **given)


def given_flags(obj: Any, **overrides: Any) -> list[str]:
    """The flags that rebuild ``obj``'s option fields where they differ from the defaults,
    with ``overrides`` (field name -> value) applied first."""
    words: list[str] = []
    for f in dataclasses.fields(obj):
        if "help" not in f.metadata:
            continue
        value = overrides.get(f.name, getattr(obj, f.name))
        if f.default is not _UNSET and value == f.default:
            continue
        name = f.metadata["flag"] or "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            words += [name] if value else []
        else:
            words += [
                name,
                "auto"
                if value is None
                else f"{value:g}"
                if isinstance(value, float)
                else str(value),
            ]
    return words


def _unoptional(kind: Any) -> Any:
    """``X | None`` → ``X``: an optional flag parses as its inner type."""
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        inner = [k for k in typing.get_args(kind) if k is not type(None)]
        return inner[0] if len(inner) == 1 else str
    return kind


# --- parsers stricter than a bare type --------------------------------------------------------
def fraction(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1 (exclusive)")
    return value


def non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0.0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


def at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text} is below the minimum {minimum}")
        return value

    parse.__name__ = "int"  # argparse names the type in "invalid int value: 'x'"
    return parse


def folds(text: str) -> int | None:
    if text == "auto":
        return None
    value = int(text)
    if value == 1 or value < 0:
        raise argparse.ArgumentTypeError(
            f"{text}: use auto, 0 (validation split only) or 2 or more"
        )
    return value


def repository(text: str) -> Path | str:
    """``--out``: a folder, or a bucket URL kept as text (as a Path, s3://b/p would be s3:/b/p)."""
    return text if re.match(r"^[a-z][a-z0-9+.-]*://.", text) else Path(text)


def model_name(text: str) -> str:
    from contract.metadata import NAME_PATTERN

    if not re.fullmatch(NAME_PATTERN, text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a model name: use letters, digits, '_', '.' and '-', starting with "
            "a letter or digit (it becomes the folder OUT/NAME/)"
        )
    return text
