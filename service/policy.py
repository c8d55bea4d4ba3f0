"""Which versions of a model serve: ``latest:N``, ``all`` or ``specific:1,3`` (a setting)."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class VersionPolicy:
    """``latest:N`` (the N newest), ``all``, or ``specific:1,3``."""

    latest: int | None = 1
    specific: frozenset[int] = frozenset()

    @classmethod
    def parse(cls, text: str) -> VersionPolicy:
        text = text.strip().lower()
        if text == "all":
            return cls(latest=None)
        if m := re.fullmatch(r"latest(?::(\d+))?", text):
            return cls(latest=max(1, int(m.group(1) or 1)))
        if m := re.fullmatch(r"specific:(\d+(?:,\d+)*)", text):
            return cls(latest=None, specific=frozenset(int(v) for v in m.group(1).split(",")))
        raise ValueError(f"version_policy {text!r}: use 'latest:N', 'all' or 'specific:1,3'")

    def select(self, versions: list[int]) -> list[int]:
        if self.specific:
            return [v for v in versions if v in self.specific]
        ordered = sorted(versions, reverse=True)
        return ordered if self.latest is None else ordered[: self.latest]
