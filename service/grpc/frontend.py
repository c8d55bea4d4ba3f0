"""gRPC server lifecycle: OIP servicer, health, reflection, limits, keepalive, graceful stop.

``GrpcFrontend`` runs on the caller's event loop, so a BentoML worker can host it beside its
HTTP app; SO_REUSEPORT lets several workers share the port.
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
from service.grpc import feedback
from service.grpc.generated import grpc_predict_v2_pb2 as pb
from service.grpc.generated import visor_ext_pb2_grpc as ext_grpc
from service.grpc.handlers import SERVICE_NAME, add_inference_service
from service.grpc.servicer import InferenceServicer
from service.settings import Settings

log = logging.getLogger(__name__)
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def server_options(settings: Settings) -> list[tuple[str, int]]:
    limit = settings.grpc_max_message_bytes
    return [
        ("grpc.max_send_message_length", limit),
        ("grpc.max_receive_message_length", limit),
        # SO_REUSEPORT only for workers sharing the port; with it, a second server would
        # bind a busy port and take part of its connections.
        ("grpc.so_reuseport", 1 if settings.worker_count > 1 else 0),
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
        # A TCP connection that sends nothing, or its HTTP/2 preface a byte at a time,
        # never completes the handshake: this closes it (idle_ms only counts once it has).
        ("grpc.server_handshake_timeout_ms", ms(settings.grpc_handshake_timeout_s)),
        ("grpc.max_connection_idle_ms", ms(settings.idle_timeout_s)),
        # GRPC has no read timeout for a call's message; age + grace bound how long a
        # trickled message can hold a connection.
        ("grpc.max_connection_age_ms", ms(settings.grpc_max_connection_age_s)),
        ("grpc.max_connection_age_grace_ms", ms(settings.grpc_max_connection_age_grace_s)),
        ("grpc.max_concurrent_streams", settings.grpc_max_concurrent_streams),
        ("grpc.max_allowed_incoming_connections", settings.max_connections),
    ]


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS for the gRPC port when a certificate is set (None: plain); with a client CA, every
    client must present a certificate it signed."""
    cert, key = settings.tls_cert_file, settings.tls_key_file
    client_ca = settings.tls_client_ca_file
    if cert is None or key is None:
        return None
    return grpc.ssl_server_credentials(
        [(key.read_bytes(), cert.read_bytes())],
        root_certificates=client_ca.read_bytes() if client_ca is not None else None,
        require_client_auth=client_ca is not None,
    )


class HealthPublisher:
    """Mirrors the engine's readiness into grpc.health.v1: server "" and one entry per model."""

    def __init__(self, engine: Engine, health: health_aio.HealthServicer) -> None:
        self._engine = engine
        self.health = health
        self._pending: asyncio.Task | None = None
        self._stopped = False

    def changed(self) -> None:
        # The engine calls this synchronously on the loop; HealthServicer.set is a coroutine.
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


class GrpcFrontend:
    """The gRPC front-end of one engine: OIP servicer, health, reflection. ``start()``/``stop()``.

    Runs on the caller's event loop; ``service.server.VisorServer`` builds it, beside BentoML's
    HTTP app or alone.
    """

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        *,
        interceptors: Sequence[grpc.aio.ServerInterceptor] | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        if interceptors is None:
            from service.auth import ApiKeyInterceptor, ApiKeys

            keys = ApiKeys(settings.api_keys)
            interceptors = [ApiKeyInterceptor(keys)] if keys.enabled else []
        self._interceptors = list(interceptors)
        self.server: grpc.aio.Server | None = None  # made in start(): it binds to that loop
        self.servicer = InferenceServicer(engine, settings)
        self.health = HealthPublisher(engine, health_aio.HealthServicer())
        self.port = 0
        self._stopping: asyncio.Future[None] | None = None

    async def start(self) -> None:
        """Bind, publish health, serve; raises OSError when the address cannot be bound."""
        self.server = grpc.aio.server(
            interceptors=self._interceptors, options=server_options(self.settings)
        )
        add_inference_service(self.servicer, self.server)
        ext_grpc.add_FeedbackServicer_to_server(feedback.FeedbackServicer(self.engine), self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health.health, self.server)
        if self.settings.grpc_reflection:
            _enable_reflection(self.server)
        address = f"{self.settings.host}:{self.settings.grpc_port}"
        credentials = server_credentials(self.settings)
        if credentials is None:
            self.port = self.server.add_insecure_port(address)
        else:
            self.port = self.server.add_secure_port(address, credentials)
        if self.port == 0:
            raise OSError(f"gRPC could not bind {address}")
        await self.health.publish()
        self.engine.add_listener(self.health.changed)
        await self.server.start()
        log.info(
            "gRPC (Open Inference Protocol v2) listening on %s:%d%s",
            self.settings.host,
            self.port,
            _tls_label(self.settings),
        )

    def begin_stop(self, grace: float | None = None) -> asyncio.Future[None]:
        """Start the graceful stop now (e.g. from a signal handler); idempotent."""
        if self._stopping is None:
            grace = self.settings.grace_period_s if grace is None else grace
            self._stopping = asyncio.ensure_future(self._stop(grace))
        return self._stopping

    async def stop(self, grace: float | None = None) -> None:
        await self.begin_stop(grace)

    async def _stop(self, grace: float) -> None:
        """Report NOT_SERVING, refuse new calls (UNAVAILABLE), let in-flight calls finish."""
        loop = asyncio.get_running_loop()
        end = loop.time() + grace
        await self.health.shutdown()
        # Refuse new inference ourselves (UNAVAILABLE) while in-flight calls finish, and
        # only then close the server: a call racing gRPC's own shutdown would end CANCELLED.
        self.servicer.stopping = True
        await self.servicer.wait_idle(grace)
        if self.server is not None:
            await self.server.stop(max(0.0, end - loop.time()))
        log.info("gRPC server stopped")


def _tls_label(settings: Settings) -> str:
    if settings.tls_cert_file is None:
        return ""
    return " (mutual TLS)" if settings.tls_client_ca_file is not None else " (TLS)"


def _enable_reflection(server: grpc.aio.Server) -> None:
    # Our messages live in their own descriptor pool (see scripts/gen_proto.sh), and
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
        feedback.SERVICE_NAME,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        reflection.SERVICE_NAME,
    )
    reflection.enable_server_reflection(names, server, pool=pool)
