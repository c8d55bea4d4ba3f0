"""Request ids that carry what was answered, signed, so that any replica takes the feedback.

A served answer's ``request_id`` is a receipt: the model, the version, a random nonce and the
thresholded classes of each image, signed with HMAC-SHA256 under ``VISOR_FEEDBACK_KEYS`` and
time-stamped (itsdangerous, the Pallets signer Flask's sessions use). Feedback needs nothing else,
so a replica that never saw the request, or one that restarted since, counts it exactly as the
one that answered; no store is shared and none is kept at rest. The key is shared by every replica;
older keys listed after the first are still accepted, which rotates it without losing feedback.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from itsdangerous import BadSignature, SignatureExpired, TimestampSigner

from service.errors import UnknownRequest

SALT = "visor.feedback.v1"  # a receipt of another purpose signed with the same key never reads


@dataclass(frozen=True, slots=True)
class Receipt:
    """What one request's images were answered with."""

    model: str
    version: int
    nonce: str  # tells two requests with the same answers apart (each image counts once)
    predicted: tuple[tuple[int, ...], ...]  # thresholded class indices per image


class Receipts:
    """Issue and read receipts: ``keys[0]`` signs, any of ``keys`` verifies."""

    def __init__(
        self, keys: Sequence[str], ttl_s: float, clock: Callable[[], float] = time.time
    ) -> None:
        if not keys or not all(keys):
            raise ValueError("receipts need at least one non-empty key")

        class Signer(TimestampSigner):
            def get_timestamp(self) -> int:
                return int(clock())

        # The signer alone, not itsdangerous' serializers: they try zlib on every payload,
        # which costs more than the rest of a receipt (docs/monitoring.md).
        self._signer = Signer(
            list(reversed(keys)),  # itsdangerous signs with the last key, tries them all
            salt=SALT,
            digest_method=hashlib.sha256,
        )
        self.ttl_s = ttl_s

    def issue(self, model: str, version: int, predicted: Sequence[Sequence[int]]) -> str:
        nonce = os.urandom(8).hex()
        fields = [model, version, nonce, predicted]
        payload = base64.urlsafe_b64encode(json.dumps(fields, separators=(",", ":")).encode())
        return self._signer.sign(payload.rstrip(b"=")).decode()

    def read(self, request_id: str) -> Receipt:
        """The receipt, or UnknownRequest saying why it cannot be one (tampered, expired)."""
        try:
            payload = self._signer.unsign(request_id, max_age=self.ttl_s)
        except SignatureExpired:
            raise UnknownRequest(
                f"Request id {_short(request_id)} expired: feedback is taken for "
                f"{self.ttl_s:g} s after the answer (VISOR_MONITOR_PREDICTION_TTL_S)."
            ) from None
        except BadSignature:
            raise UnknownRequest(
                f"Request id {_short(request_id)} was not issued by this model server: send "
                "the request_id an answer gave, unchanged. Replicas must share "
                "VISOR_FEEDBACK_KEYS to take each other's feedback."
            ) from None
        try:
            padded = payload + b"=" * (-len(payload) % 4)
            model, version, nonce, predicted = json.loads(base64.urlsafe_b64decode(padded))
        except (binascii.Error, ValueError) as exc:  # signed by us, so only a key reused elsewhere
            raise UnknownRequest(f"Request id {_short(request_id)} holds no receipt.") from exc
        return Receipt(model, version, nonce, tuple(tuple(p) for p in predicted))


def _short(request_id: str) -> str:
    return repr(request_id if len(request_id) <= 40 else request_id[:37] + "...")
