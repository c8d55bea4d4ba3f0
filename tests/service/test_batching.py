"""The adaptive batcher on its own, with a fake backend we can hold and inspect."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from service.batching import AdaptiveBatcher, BatchPolicy
from service.errors import DeadlineExceeded, InternalError, QueueFull
from service.metrics import Metrics, VersionMetrics

pytestmark = pytest.mark.anyio


class FakeBackend:
    """Returns each row's first pixel; records batch sizes; can be held on a gate.

    Batches are recorded as they reach the backend, before the gate: two pool threads may wait on
    the gate at once (a prefetched batch waits in the pool), and once it opens either may run
    first, so recording after it made the order a race.
    """

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.rows_seen: list[float] = []
        self.gate = threading.Event()
        self.gate.set()
        self.fail = False
        self._lock = threading.Lock()

    def run(self, x: np.ndarray) -> np.ndarray:
        with self._lock:
            self.batches.append(len(x))
            self.rows_seen.extend(x[:, 0, 0, 0].tolist())
        self.gate.wait(30)
        if self.fail:
            raise RuntimeError("backend exploded")
        return x[:, 0, 0, :1].reshape(len(x), 1) * 2


@pytest.fixture
def pool():
    with ThreadPoolExecutor(2) as executor:
        yield executor


def batcher(backend, pool, *, max_batch=8, delay_ms=5.0, queue=64, concurrency=1, metrics=None):
    return AdaptiveBatcher(
        "t v1",
        backend.run,
        pool,
        BatchPolicy(max_batch, delay_ms / 1000, queue, concurrency),
        metrics,
    )


def one(value: float, n: int = 1) -> np.ndarray:
    return np.full((n, 2, 2, 1), value, np.float32)


async def held_first(backend: FakeBackend, b: AdaptiveBatcher) -> asyncio.Future:
    """Close the backend's gate and send one request: it runs alone, held until the gate opens."""
    backend.gate.clear()
    first = asyncio.ensure_future(b.submit(one(0)))
    await asyncio.sleep(0.05)
    return first


async def test_batches_form_under_concurrency_and_results_keep_order(pool) -> None:
    backend = FakeBackend()
    registry = CollectorRegistry()
    vm = VersionMetrics(Metrics(registry), "t", 1)
    b = batcher(backend, pool, metrics=vm)
    first = await held_first(backend, b)
    rest = [asyncio.ensure_future(b.submit(one(i, n=1 + i % 2))) for i in range(1, 13)]
    await asyncio.sleep(0.05)
    backend.gate.set()
    results = await asyncio.gather(first, *rest)
    for i, out in enumerate(results):
        assert out.shape == (1 + i % 2 if i else 1, 1) and np.all(out == 2 * i)
    assert backend.batches[0] == 1 and max(backend.batches[1:]) > 1
    assert all(size <= 8 for size in backend.batches)
    assert registry.get_sample_value(
        "visor_batch_size_count", {"model": "t", "version": "1"}
    ) == len(backend.batches)
    assert registry.get_sample_value("visor_batch_size_sum", {"model": "t", "version": "1"}) == 19


async def test_full_queue_rejects_at_once(pool) -> None:
    backend = FakeBackend()
    b = batcher(backend, pool, queue=4)
    running = await held_first(backend, b)
    queued = [asyncio.ensure_future(b.submit(one(1, n=2))) for _ in range(2)]
    await asyncio.sleep(0)
    with pytest.raises(QueueFull):
        b.submit(one(9))  # raises synchronously: no waiting behind the queue
    backend.gate.set()
    await asyncio.gather(running, *queued)


async def test_expired_requests_never_run(pool) -> None:
    import time

    backend = FakeBackend()
    b = batcher(backend, pool)
    running = await held_first(backend, b)
    expired = asyncio.ensure_future(b.submit(one(7), deadline=time.monotonic() + 0.01))
    alive = asyncio.ensure_future(b.submit(one(8), deadline=time.monotonic() + 30))
    await asyncio.sleep(0.05)
    backend.gate.set()
    with pytest.raises(DeadlineExceeded):
        await expired
    assert (await alive)[0, 0] == 16
    await running
    assert 7.0 not in backend.rows_seen


async def test_batch_error_reaches_every_waiter_and_batcher_recovers(pool) -> None:
    backend = FakeBackend()
    b = batcher(backend, pool)
    first = await held_first(backend, b)
    backend.fail = True
    waiters = [asyncio.ensure_future(b.submit(one(i))) for i in range(1, 5)]
    await asyncio.sleep(0.01)
    backend.gate.set()
    outcomes = await asyncio.gather(first, *waiters, return_exceptions=True)
    assert all(isinstance(o, InternalError) and "backend exploded" in str(o) for o in outcomes)
    backend.fail = False
    assert (await b.submit(one(3)))[0, 0] == 6


async def test_drain_waits_for_queued_work(pool) -> None:
    backend = FakeBackend()
    backend.gate.clear()
    b = batcher(backend, pool)
    pending = [asyncio.ensure_future(b.submit(one(i))) for i in range(3)]
    await asyncio.sleep(0.02)
    drained = asyncio.ensure_future(b.drain())
    await asyncio.sleep(0.02)
    assert not drained.done()
    backend.gate.set()
    await drained
    assert all(p.done() and not p.exception() for p in pending)


async def test_a_full_batch_waits_in_the_pool_while_every_slot_runs() -> None:
    # NOTE: so the thread that finishes a batch starts the next at once, without waiting for
    # the event loop to launch it.
    backend = FakeBackend()
    with ThreadPoolExecutor(1) as single:
        registry = CollectorRegistry()
        metrics = VersionMetrics(Metrics(registry), "t", 1)
        b = batcher(backend, single, max_batch=2, concurrency=1, metrics=metrics)
        first = await held_first(backend, b)
        rest = [asyncio.ensure_future(b.submit(one(i))) for i in range(1, 5)]
        await asyncio.sleep(0.05)
        depth = registry.get_sample_value("visor_queue_depth", {"model": "t", "version": "1"})
        assert depth == 2  # requests 1 and 2 wait in the pool as one batch
        backend.gate.set()
        results = await asyncio.gather(first, *rest)
    assert [float(r[0, 0]) for r in results] == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert backend.batches == [1, 2, 2]


async def test_requests_that_cannot_share_a_batch_fail_and_the_batcher_goes_on(pool) -> None:
    backend = FakeBackend()
    b = batcher(backend, pool)
    first = await held_first(backend, b)
    odd = [
        asyncio.ensure_future(b.submit(np.zeros((1, 2, 2, 1), np.float32))),
        asyncio.ensure_future(b.submit(np.zeros((1, 3, 3, 1), np.float32))),
    ]
    await asyncio.sleep(0.01)
    backend.gate.set()
    await first
    for waiter in odd:
        with pytest.raises(InternalError, match="batch of 2 requests"):
            await waiter
    assert (await b.submit(one(5)))[0, 0] == 10


class ThreadRecorder(FakeBackend):
    """FakeBackend that also records which thread ran each batch."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[int] = []

    def run(self, x: np.ndarray) -> np.ndarray:
        self.threads.append(threading.get_ident())
        return super().run(x)


def inline_batcher(backend, pool, **kw):
    return AdaptiveBatcher(
        "t v1", backend.run, pool, BatchPolicy(8, 0.005, 64, 1, inline_lone=True), **kw
    )


async def test_a_lone_client_runs_on_the_loop_between_probes(pool) -> None:
    from service.batching import INLINE_RATION

    backend = ThreadRecorder()
    b = inline_batcher(backend, pool)
    loop_thread = threading.get_ident()
    rounds = 3 * (INLINE_RATION + 1)
    for i in range(rounds):
        out = await b.submit(one(i))
        assert out[0, 0] == 2 * i
    on_loop = [t == loop_thread for t in backend.threads]
    # the first request of each ration is a probe on a pool thread; the ration runs inline
    assert on_loop == ([False] + [True] * INLINE_RATION) * 3


async def test_a_crowd_after_lone_requests_is_batched(pool) -> None:
    from service.batching import INLINE_RATION

    backend = ThreadRecorder()
    b = inline_batcher(backend, pool)
    await b.submit(one(0))  # the probe earns a ration of inline runs
    backend.batches.clear()
    backend.threads.clear()
    loop_thread = threading.get_ident()
    crowd = [asyncio.ensure_future(b.submit(one(i))) for i in range(1, 41)]
    outs = await asyncio.gather(*crowd)
    assert [float(o[0, 0]) for o in outs] == [2.0 * i for i in range(1, 41)]
    inline_runs = sum(t == loop_thread for t in backend.threads)
    assert inline_runs <= INLINE_RATION
    assert max(backend.batches) > 1, backend.batches  # the rest were batched
    # and the crowd stopped inline runs: the next lone request waits for quiet on a thread
    backend.threads.clear()
    await b.submit(one(99))
    assert backend.threads != [loop_thread]


async def test_an_inline_failure_fails_that_request_only(pool) -> None:
    backend = ThreadRecorder()
    b = inline_batcher(backend, pool)
    await b.submit(one(0))
    backend.fail = True
    with pytest.raises(InternalError):
        await b.submit(one(1))
    backend.fail = False
    assert (await b.submit(one(2)))[0, 0] == 4
