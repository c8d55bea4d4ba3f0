"""``python -m service serve`` with a bad setting: one clear line and exit status 2; a second gRPC
server on a busy port is refused unless the port is shared between workers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from service.engine import Engine
from service.grpc.frontend import GrpcFrontend
from tests.helpers import ROOT
from tests.helpers.servers import LoopThread


def _serve(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VISOR_")}
    return subprocess.run(
        [sys.executable, "-m", "service", "serve", *args],
        cwd=ROOT,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["--backend", "tensorflow"], {}, "backend (--backend / VISOR_BACKEND) = 'tensorflow'"),
        (["--http-port", "70000"], {}, "http_port (--http-port / VISOR_HTTP_PORT) = '70000'"),
        (["--grpc-port", "x"], {}, "grpc_port (--grpc-port / VISOR_GRPC_PORT) = 'x'"),
        ([], {"VISOR_WORKERS": "two"}, "workers (--workers / VISOR_WORKERS) = 'two'"),
        (["--version-policy", "newest"], {}, "use 'latest:N', 'all' or 'specific:1,3'"),
        (["--models", "no/such/folder"], {}, "model repository no/such/folder is not a folder"),
        (["--host", "no.such.host.invalid"], {}, "cannot bind host 'no.such.host.invalid'"),
        # fail closed: a deployment that asks for keys never serves openly for want of one
        ([], {"VISOR_REQUIRE_API_KEYS": "true"}, "VISOR_REQUIRE_API_KEYS) = 'true': no API key"),
        ([], {"VISOR_REQUIRE_API_KEYS": "1", "VISOR_API_KEYS": " , "}, "= '1': no API key"),
        ([], {"VISOR_REQUIRE_API_KEYS": "true", "VISOR_API_KEYS": '[""]'}, "= 'true': no API key"),
    ],
)
def test_bad_setting_is_one_line_and_exit_2(
    model_repo: Path, args: list[str], env: dict, expected: str
) -> None:
    models = [] if "--models" in args else ["--models", str(model_repo)]
    done = _serve(*models, *args, env=env)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("python -m service serve: error: ") and expected in lines[0]


def test_required_keys_pass_when_one_is_set() -> None:
    from service.settings import Settings

    settings = Settings(require_api_keys=True, api_keys="k1", _env_file=None)
    assert [k.get_secret_value() for k in settings.api_keys] == ["k1"]
    assert Settings(require_api_keys=False, api_keys="", _env_file=None).api_keys == []


def _start(make_settings, registry, **overrides):
    settings = make_settings(**overrides)
    thread = LoopThread()
    engine = Engine(settings, registry=registry)
    thread.run(engine.start())
    try:
        server = GrpcFrontend(engine, settings)
        thread.run(server.start())
        return thread, engine, server
    except BaseException:
        thread.run(engine.stop())
        thread.close()
        raise


def _stop(thread, engine, server) -> None:
    thread.run(server.stop(0))
    thread.run(engine.stop())
    thread.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_busy_grpc_port_shared_only_between_workers(make_settings, registry, workers) -> None:
    first = _start(make_settings, registry, workers=workers)
    try:
        port = first[2].port
        if workers == 1:
            with pytest.raises(RuntimeError, match="Failed to bind"):
                _start(make_settings, registry, grpc_port=port, workers=1)
        else:  # NOTE: workers of one server share the port (SO_REUSEPORT)
            _stop(*_start(make_settings, registry, grpc_port=port, workers=workers))
    finally:
        _stop(*first)
