"""Everything Visor reaches into BentoML and uvicorn for: the one file a release of either breaks.

- ``export_settings`` and ``serve``: BentoML's ``serve_http``, a prometheus folder per server.
- ``PassRequest``: an input spec for which BentoML hands the handler the raw request.
- ``swagger_assets``: the Swagger UI bundle inside BentoML's package, served by /docs.
- ``install_in_worker``: the request timeout in place of BentoML's (``deadline.py``) and uvicorn's
  HTTP protocol with a timer per connection phase (``GuardedHttpProtocol``).

BentoML's supervisor (circus) spawns ``settings.workers`` worker processes that share the HTTP
socket; each imports ``service.http.frontend:Visor`` and rebuilds ``Settings`` from the
environment, so every setting given here is exported as a ``VISOR_`` variable first.

``SUPPORTED`` holds the releases this module was tested with (pyproject.toml pins the same); any
other stops the server at start-up: run tests/service/http against it, then widen both.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import shutil
import socket
import ssl
import sys
import tempfile
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any, ClassVar

import bentoml  # noqa: F401  (missing: ModuleNotFoundError "bentoml", so serve gRPC only)
from packaging.specifiers import SpecifierSet
from pydantic import SecretStr
from starlette.requests import Request

from service.busypoll import loop_factory
from service.errors import StartupError
from service.settings import Settings

log = logging.getLogger("visor.http")
SUPPORTED = {"bentoml": ">=1.4,<1.5", "uvicorn": ">=0.55,<0.56"}


def check_versions() -> None:
    """Refuse to start with a BentoML or uvicorn release the glue below was not tested with."""
    found = {name: version(name) for name in SUPPORTED}
    wrong = [
        f"{name} {found[name]}"
        for name, spec in SUPPORTED.items()
        if found[name] not in SpecifierSet(spec)
    ]
    if wrong:
        wanted = ", ".join(f"{name}{spec}" for name, spec in SUPPORTED.items())
        raise StartupError(
            f"{' and '.join(wrong)} installed, but Visor's HTTP front-end (service/http/bento.py) "
            f"is tested with {wanted}: install those (scripts/install.sh serve), or serve gRPC only "
            "(--protocol grpc)"
        )


check_versions()
# after the check, so an unsupported release fails with its message rather than an ImportError
from _bentoml_impl.server import serve_http
from _bentoml_sdk.io_models import IODescriptor
from bentoml._internal import server as bentoml_server
from bentoml._internal.configuration.containers import BentoMLContainer
from bentoml._internal.server.http import instruments, traffic
from starlette.types import ASGIApp
from uvicorn import config as uvicorn_config
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from service.http.deadline import RequestTimeoutMiddleware
from service.http.fastpath import FastPathPlan, InferFastPath


def settings_env(settings: Settings) -> dict[str, str]:
    """``VISOR_*`` variables that rebuild ``settings`` in another process."""
    prefix = Settings.model_config.get("env_prefix", "VISOR_")
    env: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        if value is not None:
            env[f"{prefix}{name}".upper()] = _env_value(value)
    return env


def _env_value(value: Any) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, (list, tuple)):
        # pydantic-settings reads complex fields as JSON.
        return json.dumps([_env_value(v) if isinstance(v, SecretStr) else v for v in value])
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def bentoml_options(settings: Settings, given: str = "") -> str:
    """``BENTOML_CONFIG_OPTIONS`` for the workers: what the user gave, plus Visor's switches."""
    options = [given.strip()]
    # "services.visor.*" keys only: Visor.inject_config() overwrites api_server.* and the
    # top-level tracing block with the service's own config, so nothing else reaches a worker.
    if not settings.http_access_log:
        # one log line per request is a measurable share of a small request's cost
        options.append("services.visor.logging.access.enabled=false")
    if not settings.http_tracing:
        # BentoML installs its OpenTelemetry middleware unconditionally; a URL regex that
        # matches every path makes it hand each request straight on (the cost it saves is
        # measured in docs/benchmarks.md).
        options.append("services.visor.tracing.excluded_urls=.")
    return " ".join(o for o in options if o)


def tls_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's TLS arguments: HTTPS when a certificate is set, client certificates required
    (signed by the client CA) when one is set too."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return {}
    client_ca = settings.tls_client_ca_file
    return {
        "ssl_certfile": str(settings.tls_cert_file),
        "ssl_keyfile": str(settings.tls_key_file),
        "ssl_ca_certs": None if client_ca is None else str(client_ca),
        "ssl_cert_reqs": ssl.CERT_NONE if client_ca is None else ssl.CERT_REQUIRED,
    }


def export_settings(settings: Settings) -> None:
    """Put ``settings`` where BentoML's workers read them: ``VISOR_*`` and BentoML's options."""
    os.environ.update(settings_env(settings))
    os.environ["BENTOML_CONFIG_OPTIONS"] = bentoml_options(
        settings, os.environ.get("BENTOML_CONFIG_OPTIONS", "")
    )


def serve(settings: Settings, service: Any) -> None:
    """Serve ``service`` (``frontend.Visor``, imported after ``export_settings``) over HTTP on
    ``settings.http_port``, and gRPC on ``grpc_port`` unless protocol=http."""
    check_versions()
    service.config["workers"] = settings.worker_count
    service.inject_config()
    if settings.tls_cert_file is not None:
        BentoMLContainer.ssl.enabled.set(True)  # read only for the "listening on https://" line
    # BentoML's /metrics aggregates the workers through prometheus multiprocess files; its
    # default folder is per user and wiped by every server that starts, so each gets its own.
    metrics_dir = tempfile.mkdtemp(prefix="visor-prometheus-")
    BentoMLContainer.prometheus_multiproc_dir.set(metrics_dir)
    if settings.worker_count == 1 and settings.single_process:
        serve_in_process(settings, service, metrics_dir)  # replaces this process; never returns
    try:
        serve_http(
            service,
            host=settings.host,
            port=settings.http_port,
            timeout_graceful_shutdown=max(1, math.ceil(settings.grace_period_s)),
            timeout_keep_alive=max(1, math.ceil(settings.idle_timeout_s)),
            **tls_options(settings),
        )
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def serve_in_process(settings: Settings, service: Any, metrics_dir: str) -> None:
    """Become the one worker: bind the HTTP socket, then exec BentoML's worker script on it
    (through ``service.http.single``, which exits 0 after a drain and removes ``metrics_dir``).

    What ``serve_http`` starts for one worker, without its supervisor (circus and BentoML's SDK,
    about 100 MB RSS of a one-worker server's 250 at rest, docs/benchmarks.md). The exec keeps
    the PID, so a container's signals and exit code reach the worker itself. Lost with the
    supervisor: the restart of a crashed worker, which a container runtime or Kubernetes does
    for the whole process instead.
    """
    from _bentoml_impl.server.serving import server_on_deployment
    from bentoml.serving import construct_ssl_args, construct_timeouts_args

    server_on_deployment(service)  # what serve_http runs first: the service's deployment hooks
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((settings.host, settings.http_port))
    backlog = BentoMLContainer.api_server_config.backlog.get()
    listener.listen(backlog)
    listener.set_inheritable(True)
    tls = tls_options(settings)
    scheme = "https" if tls else "http"
    log_host = "localhost" if settings.host in ("0.0.0.0", "::") else settings.host
    os.environ.update(
        {
            "PROMETHEUS_MULTIPROC_DIR": metrics_dir,
            "BENTOML_RUNNER_MAP": json.dumps(
                {service.name: f"{scheme}://{log_host}:{settings.http_port}"}
            ),
        }
    )
    args = [
        sys.executable,
        "-m",
        "service.http.single",
        metrics_dir,
        service.import_string,
        "--fd",
        str(listener.fileno()),
        "--service-name",
        service.name,
        "--backlog",
        str(backlog),
        "--worker-id",
        "1",
        "--args",
        json.dumps(BentoMLContainer.bento_arguments.get()),
        *construct_ssl_args(
            ssl_certfile=tls.get("ssl_certfile"),
            ssl_keyfile=tls.get("ssl_keyfile"),
            ssl_cert_reqs=tls.get("ssl_cert_reqs"),
            ssl_ca_certs=tls.get("ssl_ca_certs"),
        ),
        *construct_timeouts_args(
            timeout_keep_alive=max(1, math.ceil(settings.idle_timeout_s)),
            timeout_graceful_shutdown=max(1, math.ceil(settings.grace_period_s)),
        ),
    ]
    os.chdir(service.working_dir)
    log.info(
        "one worker, no supervisor: serving %s on %s://%s:%d",
        service.name,
        scheme,
        log_host,
        settings.http_port,
    )
    logging.shutdown()
    os.execv(sys.executable, args)


class PassRequest(IODescriptor):
    """An input spec BentoML documents but does not parse: the handler gets the ``Request`` and
    reads multipart or JSON itself, with the body limit and Visor's error format."""

    __root_input__ = True

    @classmethod
    async def from_http_request(cls, request: Request, serde: Any) -> Any:  # type: ignore[override]
        return request


def swagger_assets() -> Path:
    """Where BentoML keeps its Swagger UI bundle (CSS and JS)."""
    return Path(bentoml_server.__file__).parent / "static_content"


def install_in_worker(settings: Settings, infer_app: Callable[[], ASGIApp]) -> None:
    """Change how this worker's BentoML app and uvicorn server are built (before they are).

    ``infer_app`` builds REST inference's app for the fast path (``fastpath.py``).
    """
    install_request_timeout()
    instruments.RunnerTrafficMetricsMiddleware = SharedTrafficMetrics  # type: ignore[misc]
    GuardedHttpProtocol.fast_path = FastPathInstaller(settings, infer_app)
    GuardedHttpProtocol.limits = ConnectionLimits(settings)
    # ... and loop="auto": that name now means a loop that busy-polls (service/busypoll.py)
    global _busy_poll_us
    _busy_poll_us = settings.loop_busy_poll_us
    uvicorn_config.LOOP_FACTORIES["auto"] = f"{__name__}:busy_poll_loop_factory"
    # BentoML builds uvicorn's Config with http="auto": that name now means the guarded protocol
    uvicorn_config.HTTP_PROTOCOLS["auto"] = f"{__name__}:GuardedHttpProtocol"


_busy_poll_us = 0.0


def busy_poll_loop_factory(use_subprocess: bool = False) -> Callable[[], asyncio.AbstractEventLoop]:
    """uvicorn's loop setup for ``loop="auto"`` in a Visor worker (asyncio, never uvloop)."""
    return loop_factory(_busy_poll_us)


def install_request_timeout() -> None:
    """BentoML's app factory reads ``traffic.TimeoutMiddleware`` each time it builds an app;
    tests/service/http/test_deadline.py fails if that ever changes."""
    traffic.TimeoutMiddleware = RequestTimeoutMiddleware  # type: ignore[misc]


class SharedTrafficMetrics(instruments.RunnerTrafficMetricsMiddleware):  # type: ignore[misc]
    """BentoML's request metrics middleware, its metric families made once per process.

    Prometheus refuses a second family of the same name, so the fast path's instance takes
    the families of whichever instance set up first, and both count into the same series.
    """

    _first: ClassVar[Any] = None

    def _setup(self) -> None:  # type: ignore[override]
        first = SharedTrafficMetrics._first
        if first is None:
            super()._setup()
            SharedTrafficMetrics._first = self
            return
        self.metrics_client = first.metrics_client
        for name, value in vars(first).items():
            if name.startswith("metrics_"):
                setattr(self, name, value)
        self._is_setup = True


class FastPathInstaller:
    """Wraps uvicorn's app (once per app) in ``InferFastPath`` when this worker's BentoML
    configuration allows; decided at the first connection, once BentoML has read its config."""

    def __init__(self, settings: Settings, infer_app: Callable[[], ASGIApp]) -> None:
        self.settings = settings
        self.infer_app = infer_app
        self._wrapped: tuple[ASGIApp, ASGIApp] | None = None

    def __call__(self, app: ASGIApp) -> ASGIApp:
        if self._wrapped is None or self._wrapped[0] is not app:
            self._wrapped = (app, self._build(app))
        return self._wrapped[1]

    def _build(self, app: ASGIApp) -> ASGIApp:
        # read where BentoML's app factory reads them (_bentoml_impl/server/app.py), so the fast
        # path steps aside exactly when BentoML would put a skipped layer to work; tracing is
        # always installed there (Visor's switch only empties it: bentoml_options).
        api = BentoMLContainer.api_server_config
        traffic_config = api.traffic.get() or {}
        plan = FastPathPlan(
            enabled=self.settings.http_fast_infer,
            tracing=self.settings.http_tracing,
            access_log=bool(api.logging.access.enabled.get()),
            cors=bool(BentoMLContainer.http.cors.enabled.get()),
            max_concurrency=traffic_config.get("max_concurrency"),
        )
        if not plan.wanted:
            log.info("REST inference takes BentoML's full middleware stack (%s)", plan.why_not)
            return app
        chain: ASGIApp = RequestTimeoutMiddleware(
            self.infer_app(), timeout=traffic_config.get("timeout")
        )
        if api.metrics.enabled.get():
            chain = SharedTrafficMetrics(
                chain,
                namespace=api.metrics.namespace.get(),
                skip_paths=[*api.logging.access.skip_paths.get(), "/health"],
            )
        return InferFastPath(app, chain)


IDLE, HEADER, BODY, BUSY = "idle", "header", "body", "busy"
HEADERS_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n"
    b"connection: close\r\n\r\n"
)


class ConnectionLimits:
    """The per-phase limits (seconds) and the connection cap of one worker."""

    def __init__(self, settings: Settings) -> None:
        self.seconds = {
            IDLE: settings.idle_timeout_s,
            HEADER: settings.http_header_timeout_s,
            BODY: settings.http_body_timeout_s,
        }
        self.max_connections = settings.max_connections
        self.max_header_bytes = settings.http_max_header_bytes


class GuardedHttpProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
    """uvicorn's HTTP/1.1 protocol with a timer on the phase each connection is in.

    uvicorn has only a keep-alive timeout, armed after a response, and its ``limit_concurrency``
    keeps every idle connection; the app sees a request only once its headers are in, so slow
    clients (slowloris, a trickled body) can only be cut off here. A phase that lasts past its
    limit closes the connection:

    - ``idle``: no request in progress (a new connection, or after a response) → ``idle_timeout_s``
    - ``header``: part of a request line or headers arrived → ``http_header_timeout_s`` from then
    - ``body``: headers in, body still arriving → ``http_body_timeout_s`` from the headers
    - ``busy``: the app is working on the request → no limit here (the request deadline rules)
    """

    limits: ConnectionLimits | None = None  # set by install(); None: uvicorn as it is
    fast_path: FastPathInstaller | None = None  # set by install_in_worker()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.fast_path is not None:
            self.app = self.fast_path(self.app)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._phase: str | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._header_bytes = 0
        limits = self.limits
        if limits is not None and len(self.connections) > limits.max_connections:
            # over the cap: close before reading anything, the cheapest refusal there is.
            transport.close()
            return
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        waiting = self._phase in (IDLE, HEADER)
        super().data_received(data)
        # bytes while idle that did not start a request cycle are part of a request line
        # or headers; the header clock starts with the first of them, not with each.
        partial = waiting and not self._in_request()
        if partial and self._headers_too_large(len(data)):
            return
        self._watch(partial=partial)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch()

    def _headers_too_large(self, size: int) -> bool:
        # httptools keeps every header byte until the headers end, with no limit of its
        # own: without this a client could send megabytes of headers within the header timeout.
        self._header_bytes += size
        if self.limits is None or self._header_bytes <= self.limits.max_header_bytes:
            return False
        if not self.transport.is_closing():
            self.transport.write(HEADERS_TOO_LARGE)
            self.transport.close()
        return True

    def _in_request(self) -> bool:
        cycle: Any = self.cycle
        return cycle is not None and not cycle.response_complete

    def _current_phase(self, partial: bool) -> str:
        if self._in_request():
            return BODY if self.cycle.more_body else BUSY
        if partial or self._phase == HEADER:
            return HEADER
        return IDLE

    def _watch(self, partial: bool = False) -> None:
        if self.limits is None or self.transport.is_closing():
            return
        phase = self._current_phase(partial)
        if phase == self._phase and phase != IDLE:
            return  # the clock of a phase runs from its start, however many bytes arrive
        self._cancel_timer()
        self._phase = phase
        if phase != HEADER:
            self._header_bytes = 0
        limit = self.limits.seconds.get(phase)
        if limit:
            self._timer = self.loop.call_later(limit, self._expire, phase)

    def _expire(self, phase: str) -> None:
        self._timer = None
        if self._phase == phase and not self.transport.is_closing():
            self.transport.close()

    def _cancel_timer(self) -> None:
        timer, self._timer = getattr(self, "_timer", None), None
        if timer is not None:
            timer.cancel()
