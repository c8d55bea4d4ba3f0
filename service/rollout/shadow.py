"""Shadow runs of a candidate, gathered: what several answered requests carried runs as one batch.

A shadow run is work no client waits for, and on a busy machine it takes the cores the answers
need. Run one by one, each costs a batcher round and an ONNX Runtime call; gathered for
``wait_s`` (or until the candidate's batch limit), many cost one. The answers are sent before any
of this starts.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import numpy as np

from service.batching import Reservation
from service.errors import VisorError
from service.rollout.rollouts import Rollouts
from service.types import Classification
from service.versions import LoadedVersion, batch_limit

log = logging.getLogger(__name__)


@dataclass
class _Pending:
    lv: LoadedVersion
    cand: LoadedVersion
    items: list[tuple[np.ndarray, Classification]] = field(default_factory=list)
    images: int = 0
    timer: asyncio.TimerHandle | None = None


class Shadows:
    """``add`` after an answer; ``drain`` waits for what is running (at stop)."""

    def __init__(self, rollouts: Rollouts, wait_s: float = 0.005) -> None:
        self._rollouts = rollouts
        self._wait_s = wait_s
        self._pending: dict[tuple[str, int], _Pending] = {}
        self._tasks: set[asyncio.Task] = set()

    def add(
        self, lv: LoadedVersion, cand: LoadedVersion, pixels: np.ndarray, answered: Classification
    ) -> None:
        key = (cand.name, cand.version)
        p = self._pending.get(key)
        if p is None or p.lv is not lv or p.cand is not cand:
            if p is not None:
                self._flush(key)
            p = self._pending[key] = _Pending(lv, cand)
        p.items.append((pixels, answered))
        p.images += len(pixels)
        if p.images >= batch_limit(cand.settings, cand.backend.device):
            self._flush(key)
        elif p.timer is None:
            p.timer = asyncio.get_running_loop().call_later(self._wait_s, self._flush, key)

    def _flush(self, key: tuple[str, int]) -> None:
        p = self._pending.pop(key, None)
        if p is None:
            return
        if p.timer is not None:
            p.timer.cancel()
        try:
            # the candidate's queue admits the batch or it is skipped: a shadow never
            # queues ahead of the answers clients wait for
            reservation = p.cand.batcher.reserve(p.images)
        except VisorError:
            self._rollouts.count_shadow(p.lv.name, "dropped", len(p.items))
            return
        task = asyncio.get_running_loop().create_task(self._run(p, reservation))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, p: _Pending, reservation: Reservation) -> None:
        lv, cand = p.lv, p.cand
        pixels = np.concatenate([x for x, _ in p.items]) if len(p.items) > 1 else p.items[0][0]
        try:
            output = await cand.batcher.submit(pixels, None, reservation)
            probs = cand.post.probabilities(output)
        except Exception as exc:  # noqa: BLE001 - a shadow's failure never reaches a client
            log.debug("shadow of %s v%d failed: %s", cand.name, cand.version, exc)
            self._rollouts.count_shadow(lv.name, "failed", len(p.items))
            return
        finally:
            reservation.release()
        start = 0
        for x, answered in p.items:
            mine, theirs = answered.probabilities, probs[start : start + len(x)]
            start += len(x)
            self._rollouts.shadowed(
                lv.name,
                answered.request_id,
                mine >= lv.post.calibrated,  # what live precision counts: the served thresholds
                theirs >= cand.post.calibrated,
                np.stack([mine.argmax(axis=1), theirs.argmax(axis=1)]),
            )
        self._rollouts.count_shadow(lv.name, "compared", len(p.items))

    async def drain(self) -> None:
        for key in list(self._pending):
            self._flush(key)
        await asyncio.gather(*self._tasks, return_exceptions=True)
