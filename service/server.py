"""The assembly root: builds one server process's parts, starts and stops them in order.

``VisorServer`` owns the engine and the gRPC front-end (unless HTTP only); BentoML's HTTP front-end (``service.http.frontend``) holds one per worker, and
``serve_grpc`` runs one per gRPC-only worker process.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import signal

from prometheus_client import CollectorRegistry

from service.busypoll import loop_factory
from service.engine import Engine
from service.grpc.frontend import GrpcFrontend
from service.settings import Settings

log = logging.getLogger(__name__)


class VisorServer:
    """One process's engine and gRPC front-end: ``await start()``, ``await stop()``."""

    def __init__(self, settings: Settings, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.engine = Engine(settings, registry)
        self.grpc: GrpcFrontend | None = None
        if settings.protocol in ("grpc", "both"):
            self.grpc = GrpcFrontend(self.engine, settings)

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
        ready = sum(1 for m in self.engine.models() if m.ready)
        log.info("Visor ready: %d model version(s) serving", ready)

    def begin_stop(self) -> None:
        """Start refusing new gRPC calls now (a signal arrived); ``stop()`` finishes the job."""
        if self.grpc is not None:
            self.grpc.begin_stop()

    async def stop(self) -> None:
        """Drain gRPC, then let queued and running batches finish."""
        if self.grpc is not None:
            await self.grpc.stop()
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
    _run_workers(settings)


def _worker(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s",
    )
    with asyncio.Runner(loop_factory=loop_factory(settings.loop_busy_poll_us)) as runner:
        runner.run(VisorServer(settings).run_until_signalled())


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
