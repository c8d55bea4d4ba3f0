"""The adaptive batcher: one per loaded model version, shared by every front-end.

Requests (each an ``[n, H, W, C]`` array) wait in a bounded FIFO queue. A batch is sent at once
when no batch of this version is running; while one runs (and a slot is free) the batcher waits
until ``max_batch_size`` images are queued or the oldest has waited ``max_queue_delay``. Batches
are stacked on the loop and run in a thread pool; while every slot runs, one full batch more may
wait in the pool for the first free thread. Results are sliced back to each caller in order.

# All state lives on the event loop thread and changes only in loop callbacks, so the hot
# path takes no locks and needs no dispatcher task: ``submit`` and batch completion "pump" it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from service import busypoll
from service.errors import (
    DeadlineExceeded,
    InternalError,
    InvalidInput,
    ModelUnavailable,
    QueueFull,
)
from service.metrics import VersionMetrics


@dataclass(slots=True)
class _Request:
    pixels: np.ndarray
    future: asyncio.Future
    deadline: float | None
    enqueued: float


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    max_batch_size: int
    max_queue_delay_s: float
    max_queue_size: int  # images
    concurrency: int  # batches of this version running at once
    inline_lone: bool = False  # run a request that finds the version idle on the loop itself


# A lone request runs on the event loop, which is blocked while it runs, so requests that
# arrive meanwhile stay unseen until it ends, and the next would find the version idle again:
# inline runs alone cannot tell a lone client from a crowd served one by one. So inline runs
# come in rations of INLINE_RATION, each earned by a request run the usual way (on a thread,
# the loop free) during which no other request came; any request that finds the version busy
# ends the ration and stops inline runs for _QUIET_S. A crowd costs at most one ration of
# batch-1 runs per _QUIET_S; a lone client gets all but one request in INLINE_RATION + 1 inline.
INLINE_RATION = 16
_QUIET_S = 1.0


class Reservation:
    """Queue room held for one request's images while they decode; ``release()`` is idempotent."""

    __slots__ = ("_batcher", "_images")

    def __init__(self, batcher: AdaptiveBatcher, images: int) -> None:
        self._batcher: AdaptiveBatcher | None = batcher
        self._images = images

    def take(self, batcher: AdaptiveBatcher, images: int) -> bool:
        """Turn the held room into queued images; False if it was not held on ``batcher``."""
        held = self._batcher is batcher and images <= self._images
        self.release()
        return held

    def release(self) -> None:
        if self._batcher is not None:
            self._batcher._reserved -= self._images
            self._batcher = None


class AdaptiveBatcher:
    """``await predict(pixels, deadline)`` → the backend's output rows for those pixels."""

    def __init__(
        self,
        name: str,
        run: Callable[[np.ndarray], np.ndarray],
        executor: Executor,
        policy: BatchPolicy,
        metrics: VersionMetrics | None = None,
    ) -> None:
        self.name = name
        self._run = run
        self._executor = executor
        self._policy = policy
        self._metrics = metrics
        self._queue: deque[_Request] = deque()
        self._queued = 0  # images in the queue
        self._reserved = 0  # images admitted, still decoding
        self._depth_shown = -1  # the queue_depth gauge's value
        self._in_flight = 0  # batches running
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._idle: asyncio.Event | None = None
        self._busy_at = float("-inf")  # loop time a submit last found the version busy
        self._inline_left = 0  # inline runs allowed before the next probe on a thread
        self._probe_at: float | None = None  # loop time the running probe was queued

    @property
    def closed(self) -> bool:
        return self._closed

    def reserve(self, images: int) -> Reservation:
        """Hold queue room for ``images`` still to be decoded: refuses at once, before any work.

        Reserved images count against ``max_queue_size`` like queued ones, so requests whose
        images are still decoding cannot all pass this check and be refused only afterwards.
        """
        self._admit(images)
        self._reserved += images
        return Reservation(self, images)

    def submit(
        self,
        pixels: np.ndarray,
        deadline: float | None = None,
        reservation: Reservation | None = None,
    ) -> asyncio.Future:
        """Queue one request (raises QueueFull/ModelUnavailable at once); returns its future."""
        n = len(pixels)
        if reservation is not None and reservation.take(self, n):
            if self._closed:
                raise ModelUnavailable(f"model {self.name} is unloading; retry")
        else:
            self._admit(n)
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        now = loop.time()
        if self._policy.inline_lone and self._inline(now):
            self._run_inline(pixels, future)
            return future
        self._queue.append(_Request(pixels, future, deadline, now))
        self._queued += n
        self._pump(loop)
        return future

    def _inline(self, now: float) -> bool:
        """Whether this request runs on the loop now (see INLINE_RATION)."""
        if self._queue or self._in_flight or self._reserved:
            self._busy_at, self._inline_left, self._probe_at = now, 0, None
            return False
        if now - self._busy_at < _QUIET_S:
            return False
        if self._inline_left:
            self._inline_left -= 1
            return True
        self._probe_at = now  # This one runs on a thread; _finish grants the ration
        return False

    def _run_inline(self, pixels: np.ndarray, future: asyncio.Future) -> None:
        # No thread hand-over and no wake-up of the loop afterwards: the two hops cost
        # a lone request more than the rest of its path (docs/benchmarks.md). ``await`` on the
        # finished future then returns without yielding.
        try:
            x = pixels if pixels.dtype == np.float32 else pixels.astype(np.float32)
            y, seconds, size = self._run_batch(x)
        except Exception as exc:  # noqa: BLE001 - the request fails, the loop keeps serving
            self._fail([_Request(pixels, future, None, 0.0)], exc)
        else:
            if self._metrics:
                self._metrics.queue_time.observe(0.0)
                self._metrics.inference_time.observe(seconds)
                self._metrics.batch_size.observe(size)
            future.set_result(y)

    def _admit(self, n: int) -> None:
        if self._closed:
            raise ModelUnavailable(f"model {self.name} is unloading; retry")
        limit = self._policy.max_queue_size
        if n > limit:
            # No retry can ever succeed: a client error, not RESOURCE_EXHAUSTED.
            raise InvalidInput(
                f"{n} images in one request: more images than this server can ever queue for "
                f"model {self.name} ({limit}, VISOR_MAX_QUEUE_SIZE); send at most {limit} per "
                "request"
            )
        if self._queued + self._reserved + n > limit:
            raise QueueFull(
                f"model {self.name} has {self._queued + self._reserved} images queued (limit "
                f"{limit}); retry later"
            )

    async def drain(self) -> None:
        """Refuse new requests, then wait until queued and running batches finished."""
        self._closed = True
        if self._queue or self._in_flight:
            self._idle = asyncio.Event()
            await self._idle.wait()

    # --- private steps -------------------------------------------------------------------
    def _pump(self, loop: asyncio.AbstractEventLoop) -> None:
        policy = self._policy
        self._set_depth()
        while self._queue:
            if self._in_flight >= policy.concurrency:
                # One full batch more may wait in the pool, so a thread that finishes a
                # batch starts the next at once instead of idling until the loop launches it.
                if self._in_flight > policy.concurrency or self._queued < policy.max_batch_size:
                    break
            elif self._in_flight and self._queued < policy.max_batch_size:
                due = self._queue[0].enqueued + policy.max_queue_delay_s
                if loop.time() < due:
                    if self._timer is None:
                        self._timer = loop.call_at(due, self._on_timer, loop)
                    return
            batch = self._take(loop)
            if batch:
                self._launch(loop, batch)
        self._set_depth()
        self._maybe_idle()

    def _on_timer(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        self._pump(loop)

    def _take(self, loop: asyncio.AbstractEventLoop) -> list[_Request]:
        """Pop whole requests up to max_batch_size images; drop expired or abandoned ones."""
        now, wall = loop.time(), time.monotonic()
        batch: list[_Request] = []
        size = 0
        while self._queue:
            req = self._queue[0]
            n = len(req.pixels)
            if batch and size + n > self._policy.max_batch_size:
                break
            self._queue.popleft()
            self._queued -= n
            if req.future.done():  # The caller gave up (cancelled); skip its work
                continue
            if req.deadline is not None and wall > req.deadline:
                req.future.set_exception(
                    DeadlineExceeded("the request's deadline passed while it waited in the queue")
                )
                continue
            if self._metrics:
                self._metrics.queue_time.observe(now - req.enqueued)
            batch.append(req)
            size += n
        return batch

    def _launch(self, loop: asyncio.AbstractEventLoop, batch: list[_Request]) -> None:
        # Stacked (and converted to float32) here, on the loop, which holds the GIL already: in
        # The inference thread each numpy copy would wait for the loop to take the GIL back.
        # A lone float32 request goes to the backend uncopied.
        parts = [req.pixels for req in batch]
        try:
            x = parts[0] if len(parts) == 1 else np.concatenate(parts)
            if x.dtype != np.float32:
                x = x.astype(np.float32)
        except Exception as exc:  # noqa: BLE001 - e.g. out of memory: fail the batch, not the loop
            self._fail(batch, exc)
            return
        self._in_flight += 1
        busypoll.handed_off(1)
        done = loop.run_in_executor(self._executor, self._run_batch, x)
        done.add_done_callback(lambda fut: self._finish(loop, batch, fut))

    def _run_batch(self, x: np.ndarray) -> tuple[np.ndarray, float, int]:
        start = time.perf_counter()
        y = self._run(x)
        return y, time.perf_counter() - start, len(x)

    def _finish(
        self, loop: asyncio.AbstractEventLoop, batch: list[_Request], fut: asyncio.Future
    ) -> None:
        self._in_flight -= 1
        busypoll.handed_off(-1)
        if self._probe_at is not None and self._busy_at < self._probe_at:
            self._inline_left, self._probe_at = INLINE_RATION, None
        exc = fut.exception()
        if exc is not None:
            self._fail(batch, exc)
        else:
            y, seconds, size = fut.result()
            if self._metrics:
                self._metrics.inference_time.observe(seconds)
                self._metrics.batch_size.observe(size)
            offset = 0
            for req in batch:
                n = len(req.pixels)
                if not req.future.done():
                    req.future.set_result(y[offset : offset + n])
                offset += n
        self._pump(loop)

    def _fail(self, batch: list[_Request], exc: BaseException) -> None:
        for req in batch:
            if not req.future.done():
                req.future.set_exception(
                    InternalError(f"inference failed on a batch of {len(batch)} requests: {exc}")
                )

    def _set_depth(self) -> None:
        # A gauge write is an mmap write under a lock (prometheus multiprocess mode);
        # the pump runs twice per request, the depth changes far less often.
        if self._metrics and self._queued != self._depth_shown:
            self._depth_shown = self._queued
            self._metrics.queue_depth.set(self._queued)

    def _maybe_idle(self) -> None:
        if self._idle is not None and not self._queue and not self._in_flight:
            self._idle.set()
