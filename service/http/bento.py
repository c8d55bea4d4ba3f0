"""Run the BentoML server (HTTP, and gRPC inside each worker) until SIGTERM.

BentoML's supervisor (circus) spawns ``settings.workers`` worker processes that share the HTTP
socket; each imports ``service.http.frontend:Visor`` and rebuilds ``Settings`` from the
environment, so every setting given here is exported as a ``VISOR_`` variable first.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import ssl
import tempfile
from typing import Any

from pydantic import SecretStr

from service.settings import Settings
from service.workers.siblings import siblings_folder


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
        # NOTE: pydantic-settings reads complex fields as JSON.
        return json.dumps([_env_value(v) if isinstance(v, SecretStr) else v for v in value])
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def bentoml_options(settings: Settings, given: str = "") -> str:
    """``BENTOML_CONFIG_OPTIONS`` for the workers: what the user gave, plus Visor's switches."""
    options = [given.strip()]
    # NOTE: "services.visor.*" keys only: Visor.inject_config() overwrites api_server.* and the
    # top-level tracing block with the service's own config, so nothing else reaches a worker.
    if not settings.http_access_log:
        # one log line per request is a measurable share of a small request's cost
        options.append("services.visor.logging.access.enabled=false")
    if not settings.http_tracing:
        # NOTE: BentoML installs its OpenTelemetry middleware unconditionally; a URL regex that
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


def serve(settings: Settings) -> None:
    """Serve HTTP on ``settings.http_port`` (and gRPC on ``grpc_port`` unless protocol=http)."""
    os.environ.update(settings_env(settings))
    os.environ["BENTOML_CONFIG_OPTIONS"] = bentoml_options(
        settings, os.environ.get("BENTOML_CONFIG_OPTIONS", "")
    )
    # NOTE: BentoML's /metrics aggregates every worker through prometheus multiprocess files;
    # the supervisor sets PROMETHEUS_MULTIPROC_DIR for the workers before they import anything.
    # Its default folder is one per user ($BENTOML_HOME), wiped by every server that starts:
    # each server gets its own, removed when it stops.
    from _bentoml_impl.server import serve_http
    from bentoml._internal.configuration.containers import BentoMLContainer

    from service.http.frontend import Visor

    Visor.config["workers"] = settings.worker_count
    Visor.inject_config()
    if settings.tls_cert_file is not None:
        BentoMLContainer.ssl.enabled.set(True)  # read only for the "listening on https://" line
    metrics_dir = tempfile.mkdtemp(prefix="visor-prometheus-")
    BentoMLContainer.prometheus_multiproc_dir.set(metrics_dir)
    try:
        # NOTE: the workers' sockets for sharing gRPC calls and feedback (service/workers.py)
        with siblings_folder(settings.worker_count):
            serve_http(
                Visor,
                host=settings.host,
                port=settings.http_port,
                timeout_graceful_shutdown=max(1, math.ceil(settings.grace_period_s)),
                timeout_keep_alive=max(1, math.ceil(settings.idle_timeout_s)),
                **tls_options(settings),
            )
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
