"""gRPC server lifecycle: OIP servicer, health, reflection, limits, keepalive, graceful stop.

``start_grpc_server`` runs on the caller's event loop, so a BentoML worker can host it beside
its HTTP app; SO_REUSEPORT lets several workers share the port.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from service.engine import Engine
from service.grpc.generated import grpc_predict_v2_pb2 as pb
from service.grpc.generated import grpc_predict_v2_pb2_grpc as pb_grpc
from service.grpc.servicer import InferenceServicer
from service.settings import Settings

log = logging.getLogger(__name__)
SERVICE_NAME = "inference.GRPCInferenceService"
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def server_options(settings: Settings) -> list[tuple[str, int]]:
    limit = settings.grpc_max_message_bytes
    return [
        ("grpc.max_send_message_length", limit),
        ("grpc.max_receive_message_length", limit),
        ("grpc.so_reuseport", 1),
        ("grpc.keepalive_time_ms", int(settings.grpc_keepalive_time_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(settings.grpc_keepalive_timeout_s * 1000)),
        (
            "grpc.http2.min_ping_interval_without_data_ms",
            int(settings.grpc_min_ping_interval_s * 1000),
        ),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        *connection_limits(settings),
    ]


def connection_limits(settings: Settings) -> list[tuple[str, int]]:
    """Idle, handshake and age limits and the connection cap (docs/service.md, "Timeouts")."""

    def ms(seconds: float) -> int:
        return int(seconds * 1000)

    return [
        # NOTE: a TCP connection that sends nothing, or its HTTP/2 preface a byte at a time,
        # never completes the handshake: this closes it (idle_ms only counts once it has).
        ("grpc.server_handshake_timeout_ms", ms(settings.grpc_handshake_timeout_s)),
        ("grpc.max_connection_idle_ms", ms(settings.idle_timeout_s)),
        # NOTE: gRPC has no read timeout for a call's message; age + grace bound how long a
        # trickled message can hold a connection.
        ("grpc.max_connection_age_ms", ms(settings.grpc_max_connection_age_s)),
        ("grpc.max_connection_age_grace_ms", ms(settings.grpc_max_connection_age_grace_s)),
        ("grpc.max_concurrent_streams", settings.grpc_max_concurrent_streams),
        ("grpc.max_allowed_incoming_connections", settings.max_connections),
    ]


class HealthPublisher:
    """Mirrors the engine's readiness into grpc.health.v1: server "" and one entry per model."""

    def __init__(self, engine: Engine, health: health_aio.HealthServicer) -> None:
        self._engine = engine
        self.health = health
        self._pending: asyncio.Task | None = None
        self._stopped = False

    def changed(self) -> None:
        # NOTE: the engine calls this synchronously on the loop; HealthServicer.set is a coroutine.
        if not self._stopped and (self._pending is None or self._pending.done()):
            self._pending = asyncio.get_running_loop().create_task(self.publish())

    async def publish(self) -> None:
        await asyncio.sleep(0)  # coalesce a burst of changes into one update
        if self._stopped:
            return
        engine = self._engine
        await self.health.set("", _SERVING if engine.ready else _NOT_SERVING)
        await self.health.set(SERVICE_NAME, _SERVING if engine.ready else _NOT_SERVING)
        for name in sorted({m.name for m in engine.models()}):
            await self.health.set(name, _SERVING if engine.model_ready(name) else _NOT_SERVING)

    async def shutdown(self) -> None:
        self._stopped = True
        await self.health.enter_graceful_shutdown()


async def start_grpc_server(
    engine: Engine, settings: Settings, *, interceptors: Sequence[grpc.aio.ServerInterceptor] = ()
) -> grpc.aio.Server:
    """Start the OIP v2 gRPC server (with health and reflection) on the running loop."""
    server = grpc.aio.server(interceptors=list(interceptors), options=server_options(settings))
    servicer = InferenceServicer(engine, settings)
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    publisher = HealthPublisher(engine, health_aio.HealthServicer())
    health_pb2_grpc.add_HealthServicer_to_server(publisher.health, server)
    if settings.grpc_reflection:
        _enable_reflection(server)
    address = f"{settings.host}:{settings.grpc_port}"
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"gRPC could not bind {address}")
    await publisher.publish()
    engine.add_listener(publisher.changed)
    await server.start()
    server.visor_port = port  # type: ignore[attr-defined]
    server.visor_health = publisher  # type: ignore[attr-defined]
    server.visor_servicer = servicer  # type: ignore[attr-defined]
    log.info("gRPC (Open Inference Protocol v2) listening on %s:%d", settings.host, port)
    return server


def _enable_reflection(server: grpc.aio.Server) -> None:
    # NOTE: our messages live in their own descriptor pool (see scripts/gen_proto.sh), and
    # reflection serves one pool: give it ours, with health and reflection added to it.
    from google.protobuf import descriptor_pb2
    from grpc_reflection.v1alpha import reflection_pb2

    pool = pb.POOL
    for module in (health_pb2, reflection_pb2):
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        pool.Add(proto)
    names = (
        SERVICE_NAME,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        reflection.SERVICE_NAME,
    )
    reflection.enable_server_reflection(names, server, pool=pool)


async def stop_grpc_server(server: grpc.aio.Server, grace: float) -> None:
    """Report NOT_SERVING, refuse new calls (UNAVAILABLE), let in-flight calls finish within ``grace``."""
    loop = asyncio.get_running_loop()
    end = loop.time() + grace
    publisher: HealthPublisher | None = getattr(server, "visor_health", None)
    if publisher is not None:
        await publisher.shutdown()
    servicer: InferenceServicer | None = getattr(server, "visor_servicer", None)
    if servicer is not None:
        # NOTE: refuse new inference ourselves (UNAVAILABLE) while in-flight calls finish, and
        # only then close the server: a call racing gRPC's own shutdown would end CANCELLED.
        servicer.stopping = True
        await servicer.wait_idle(grace)
    await server.stop(max(0.0, end - loop.time()))
    log.info("gRPC server stopped")
