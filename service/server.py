"""The assembly root: builds one server process's parts, starts and stops them in order.

``VisorServer`` owns the engine, the gRPC front-end (unless HTTP only) and the link to the other
worker processes; BentoML's HTTP front-end (``service.http.frontend``) holds one per worker, and
``serve_grpc`` runs one per gRPC-only worker process.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import signal
from typing import Any

from prometheus_client import CollectorRegistry

from service.engine import Engine
from service.grpc.frontend import GrpcFrontend
from service.monitoring import FeedbackResult
from service.settings import Settings
from service.workers.siblings import (
    FEEDBACK,
    INFER,
    SiblingFeedback,
    Siblings,
    folder_from_env,
    siblings_folder,
)

log = logging.getLogger(__name__)


class VisorServer:
    """One process's engine, gRPC front-end and siblings: ``await start()``, ``await stop()``."""

    def __init__(self, settings: Settings, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        folder = folder_from_env(settings.worker_count)
        self.siblings = Siblings(folder, {}, settings.grpc_spread_busy) if folder else None
        feedback = SiblingFeedback(self.siblings, self._feedback_here) if self.siblings else None
        self.engine = Engine(settings, registry, peers=feedback)
        self.grpc: GrpcFrontend | None = None
        if settings.protocol in ("grpc", "both"):
            spread = self.siblings if settings.grpc_spread else None
            self.grpc = GrpcFrontend(self.engine, settings, siblings=spread)
        if self.siblings is not None:
            assert feedback is not None
            self.siblings.handlers[FEEDBACK] = feedback.answer
            if self.grpc is not None and settings.grpc_spread:
                self.siblings.handlers[INFER] = self.grpc.servicer.answer_sibling

    def _feedback_here(self, *args: Any) -> FeedbackResult | None:
        return self.engine.feedback_here(*args)

    async def start(self) -> None:
        """Load every model and open the ports; a lone gRPC-only worker binds first, so its
        health service answers NOT_SERVING while the models warm up."""
        # Workers sharing a port (SO_REUSEPORT) bind only once warm, or the kernel would hand
        # connections to a worker that cannot serve them yet; uvicorn likewise accepts HTTP only
        # after BentoML's start-up hook returns.
        bind_first = self.settings.protocol == "grpc" and self.settings.worker_count == 1
        if self.grpc is not None and bind_first:
            await self.grpc.start()
        await self.engine.start()
        if self.grpc is not None and not bind_first:
            await self.grpc.start()
        if self.siblings is not None:
            await self.siblings.start()
        ready = sum(1 for m in self.engine.models() if m.ready)
        log.info("Visor ready: %d model version(s) serving", ready)

    def begin_stop(self) -> None:
        """Start refusing new gRPC calls now (a signal arrived); ``stop()`` finishes the job."""
        if self.grpc is not None:
            self.grpc.begin_stop()

    async def stop(self) -> None:
        """Drain gRPC, leave the siblings, then let queued and running batches finish."""
        if self.grpc is not None:
            await self.grpc.stop()
        if self.siblings is not None:
            await self.siblings.stop()
        await self.engine.stop()

    async def run_until_signalled(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        await stop.wait()
        log.info(
            "signal received: finishing in-flight work (up to %ss)", self.settings.grace_period_s
        )
        await self.stop()


def serve_grpc(settings: Settings) -> None:
    """Serve gRPC only until SIGTERM: ``worker_count`` processes sharing the port."""
    with siblings_folder(settings.worker_count):
        _run_workers(settings)


def _worker(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s",
    )
    asyncio.run(VisorServer(settings).run_until_signalled())


def _run_workers(settings: Settings) -> None:
    if settings.worker_count == 1:
        _worker(settings)
        return
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_worker, args=(settings,), name=f"visor-grpc-{i}")
        for i in range(settings.worker_count)
    ]
    for p in procs:
        p.start()

    def forward(signum: int, _frame: object) -> None:
        for p in procs:
            if p.pid and p.is_alive():
                p.terminate() if signum == signal.SIGTERM else p.kill()

    signal.signal(signal.SIGTERM, forward)
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:  # Ctrl-C reaches the workers too (same process group)
        for p in procs:
            p.join()
