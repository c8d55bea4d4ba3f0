"""The composition root of a gRPC-only server: engine + gRPC front-end, async start()/stop().

HTTP (and HTTP + gRPC in one process) is served by BentoML (``service.http.serve``), whose
worker hosts the same ``GrpcFrontend`` on its own loop.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import signal
from typing import TYPE_CHECKING

from service.engine import Engine
from service.settings import Settings
from service.workers import Siblings, join_siblings, siblings_folder

if TYPE_CHECKING:
    from service.grpc.server import GrpcFrontend

log = logging.getLogger(__name__)


class VisorServer:
    """One engine and its gRPC server. ``await start()``; ``await stop()`` stops gracefully."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = Engine(settings)
        self.grpc: GrpcFrontend | None = None
        self.siblings: Siblings | None = None

    async def start(self) -> None:
        from service.grpc.server import GrpcFrontend

        # NOTE: one worker binds first, so health answers NOT_SERVING while the models warm up.
        # Several workers share the port (SO_REUSEPORT): each binds only once warm, or the
        # kernel would hand connections to a worker that cannot serve them yet.
        if self.settings.workers > 1:
            await self.engine.start()
        self.grpc = GrpcFrontend(self.engine, self.settings)
        await self.grpc.start()
        if self.settings.workers == 1:
            await self.engine.start()
        self.siblings = await join_siblings(self.engine, self.grpc.servicer)
        log.info(
            "Visor ready: %d model version(s) serving",
            sum(1 for m in self.engine.models() if m.ready),
        )

    async def stop(self) -> None:
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
            "signal received: finishing in-flight requests (up to %ss)",
            self.settings.grace_period_s,
        )
        await self.stop()


def _worker(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s",
    )
    asyncio.run(VisorServer(settings).run_until_signalled())


def serve_grpc(settings: Settings) -> None:
    """Serve gRPC only; ``workers`` > 1 starts that many processes sharing the port (SO_REUSEPORT)."""
    if settings.workers == 1:
        _worker(settings)
        return
    with siblings_folder(settings.workers):
        _run_workers(settings)


def _run_workers(settings: Settings) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_worker, args=(settings,), name=f"visor-grpc-{i}")
        for i in range(settings.workers)
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
    except KeyboardInterrupt:  # NOTE: Ctrl-C reaches the workers too (same process group)
        for p in procs:
            p.join()
