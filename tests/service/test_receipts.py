"""Receipts (service/monitoring/receipts.py): request ids that carry what was answered. Any
holder of the key reads them back; a changed, foreign or expired id is refused with a reason."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.errors import UnknownRequest
from service.monitoring.receipts import Receipt, Receipts


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


predictions = st.lists(st.lists(st.integers(0, 999), max_size=5), min_size=1, max_size=64)


@given(
    model=st.from_regex(r"[a-z][a-z0-9_-]{0,30}", fullmatch=True),
    version=st.integers(1, 10**6),
    predicted=predictions,
)
@settings(max_examples=200, deadline=None)
def test_a_receipt_reads_back_in_another_process_with_the_key(model, version, predicted) -> None:
    issued = Receipts(["k1"], 60).issue(model, version, predicted)
    back = Receipts(["k1"], 60).read(issued)  # another replica: only the key is shared
    assert back == Receipt(model, version, back.nonce, tuple(tuple(p) for p in predicted))
    assert len(back.nonce) == 16


@given(predicted=predictions, data=st.data())
@settings(max_examples=300, deadline=None)
def test_a_changed_request_id_is_refused_or_reads_as_issued(predicted, data) -> None:
    receipts = Receipts(["k1"], 60)
    issued = receipts.issue("digits", 1, predicted)
    original = receipts.read(issued)
    i = data.draw(st.integers(0, len(issued) - 1))
    char = data.draw(st.sampled_from("AZaz09-_.=~ "))
    changed = issued[:i] + char + issued[i + 1 :]
    try:
        back = receipts.read(changed)
    except UnknownRequest as err:
        assert "not issued by this model server" in err.message or "holds no" in err.message
    else:  # base64 may ignore the low bits of a last character: the same bytes, same receipt
        assert back == original


def test_foreign_keys_expiry_and_rotation() -> None:
    clock = Clock()
    old = Receipts(["old"], 60, clock)
    issued = old.issue("digits", 3, [[1], []])
    with pytest.raises(UnknownRequest, match="VISOR_FEEDBACK_KEYS"):
        Receipts(["another"], 60, clock).read(issued)
    rotated = Receipts(["new", "old"], 60, clock)  # the new key signs, the old still reads
    assert rotated.read(issued).predicted == ((1,), ())
    assert Receipts(["new"], 60, clock).read(rotated.issue("digits", 3, [[2]])).version == 3
    clock.now += 61
    with pytest.raises(UnknownRequest, match="expired"):
        rotated.read(issued)
    for bad in ("", "nope", "a.b.c", "x" * 10_000):
        with pytest.raises(UnknownRequest):
            rotated.read(bad)
    with pytest.raises(ValueError):
        Receipts([], 60)
