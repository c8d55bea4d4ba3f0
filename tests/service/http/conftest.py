"""Real Visor servers (BentoML HTTP + gRPC in one process) on free loopback ports: the one most
tests of a module share. The model repository: the tiny ONNX model of tests/helpers/models.py,
three labels "top", "bottom", "left" on 8x8 grayscale."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.models import tiny_repo
from tests.helpers.servers import Server, start_server


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("http")


@pytest.fixture(scope="module")
def server(workdir: Path) -> Iterator[Server]:
    """Both protocols, API keys on, a small body limit: the server most tests share."""
    srv = start_server(
        workdir,
        tiny_repo(workdir),
        api_keys="key-one,key-two",
        max_body_bytes=64 * 1024,
        max_images_per_request=4,
    )
    yield srv
    srv.stop()
