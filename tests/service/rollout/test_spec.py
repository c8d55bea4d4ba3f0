"""rollout.yaml as users write it, and as nobody should: every file is a spec or a SpecError
that names the file, never another exception (the repository's poll must go on)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from service.rollout.spec import RolloutSpec, SpecError, read_spec

FIELDS = ["policy", "share", "current", "candidate", "confidence", "margin", "min_feedback", "auto"]
values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["newest", "shadow", "canary", "0.1", "yes"]),
    st.lists(st.integers(), max_size=3),
)
mappings = st.dictionaries(st.sampled_from([*FIELDS, "polcy", "extra"]), values, max_size=6)


def _read(tmp: Path, text: str) -> RolloutSpec | None:
    (tmp / "rollout.yaml").write_text(text)
    return read_spec(tmp)


@settings(max_examples=300, deadline=None)
@given(data=mappings)
def test_any_mapping_is_a_spec_or_a_spec_error(tmp_path_factory, data) -> None:
    tmp = tmp_path_factory.mktemp("spec")
    try:
        spec = _read(tmp, yaml.safe_dump(data))
    except SpecError as exc:
        assert str(tmp / "rollout.yaml") in str(exc)
        return
    assert isinstance(spec, RolloutSpec) and 0 < spec.share <= 1 and 0.5 < spec.confidence < 1


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=200))
def test_any_text_is_a_spec_or_a_spec_error(tmp_path_factory, text) -> None:
    tmp = tmp_path_factory.mktemp("spec")
    try:
        _read(tmp, text)
    except SpecError as exc:
        assert str(tmp / "rollout.yaml") in str(exc)


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=200))
def test_any_bytes_are_a_spec_or_a_spec_error(tmp_path_factory, raw) -> None:
    tmp = tmp_path_factory.mktemp("spec")
    (tmp / "rollout.yaml").write_bytes(raw)
    try:
        read_spec(tmp)
    except SpecError as exc:
        assert str(tmp / "rollout.yaml") in str(exc)


def test_no_file_is_no_rollout_and_an_empty_one_is_newest(tmp_path: Path) -> None:
    assert read_spec(tmp_path) is None
    assert _read(tmp_path, "") == RolloutSpec()


@pytest.mark.parametrize(
    ("spec", "versions", "pair"),
    [
        ({"policy": "canary"}, [1, 2, 3], (2, 3)),  # defaults: newest against the one below
        ({"policy": "shadow", "current": 1}, [1, 2, 3], (1, 3)),
        ({"policy": "canary", "candidate": 2}, [1, 2, 3], (1, 2)),
        ({"policy": "canary"}, [4], None),  # nothing to compare with
        ({"policy": "canary", "current": 3, "candidate": 3}, [1, 3], None),
        ({"policy": "newest", "current": 1, "candidate": 2}, [1, 2], None),
    ],
)
def test_the_pair_a_spec_names(spec: dict, versions: list[int], pair) -> None:
    assert RolloutSpec(**spec).pair(versions) == pair
