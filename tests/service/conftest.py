"""Fixtures of the service tests: the tiny model's repository (tests/helpers/models.py), settings
for it, and an in-process gRPC server with a stub."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from prometheus_client import CollectorRegistry

from service.grpc.generated import grpc_predict_v2_pb2_grpc as pb_grpc
from service.settings import Settings
from tests.helpers.models import write_version
from tests.helpers.s3 import s3_server  # noqa: F401 - the loopback S3 server (test_storage.py)
from tests.helpers.servers import GrpcFixture


@pytest.fixture
def model_repo(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    write_version(root, "tiny", 1)
    write_version(root, "tiny_logits", 1, logits=True)
    return root


@pytest.fixture
def make_settings(model_repo: Path) -> Callable[..., Settings]:
    def make(**overrides: object) -> Settings:
        base = {
            "models": model_repo,
            "providers": ["CPUExecutionProvider"],
            "poll_interval_s": 0,
            "max_batch_size": 8,
            "max_queue_delay_ms": 2.0,
            "intra_op_threads": 1,
            "grpc_port": 0,
            "host": "127.0.0.1",
            "warmup_batch_sizes": [1, 8],
            "_env_file": None,
        }
        base.update(overrides)
        return Settings(**base)

    return make


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def grpc_server(make_settings, registry):
    fx = GrpcFixture(make_settings(), registry)
    yield fx
    fx.stop(0)


@pytest.fixture
def stub(grpc_server):
    channel = grpc.insecure_channel(grpc_server.url)
    yield pb_grpc.GRPCInferenceServiceStub(channel)
    channel.close()
