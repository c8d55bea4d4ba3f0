"""Two servers side by side: a busy port is refused in one line, and /metrics stay separate."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.helpers import ROOT
from tests.helpers.models import encode, image_pixels, tiny_repo
from tests.helpers.servers import start_server


def _classify_count(metrics: str) -> float:
    """The server's count of /classify requests answered 200 (BentoML's own counter)."""
    total = 0.0
    for line in metrics.splitlines():
        ours = line.startswith("bentoml_service_request_total{") and 'endpoint="/classify"' in line
        if ours and 'http_response_code="200"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_second_server_keeps_the_first_ones_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = tiny_repo(tmp_path)
    # NOTE: both share one BENTOML_HOME (start_server's), as two servers of one user do.
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))  # the servers' temporary folders go there
    first = start_server(tmp_path, models)
    try:
        png = encode(image_pixels("top"))
        for _ in range(3):
            r = httpx.post(f"{first.http}/classify", files=[("image", ("t.png", png, "image/png"))])
            assert r.status_code == 200, r.text
        assert _classify_count(httpx.get(f"{first.http}/metrics").text) == 3
        assert len(list(tmp.glob("visor-prometheus-*"))) == 1
        second = start_server(tmp_path, models)
        try:
            assert _classify_count(httpx.get(f"{second.http}/metrics").text) == 0
            assert _classify_count(httpx.get(f"{first.http}/metrics").text) == 3
        finally:
            assert second.stop() == 0
    finally:
        assert first.stop() == 0
    assert not list(tmp.glob("visor-prometheus-*"))  # each removed its own folder at exit


def _serve(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "service", "serve", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_busy_port_is_refused_in_one_line(tmp_path: Path, protocol: str) -> None:
    models = tiny_repo(tmp_path)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = _serve(
            "--models", str(models), "--host", "127.0.0.1", "--protocol", protocol,
            f"--{protocol}-port", str(port),
        )  # fmt: skip
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert re.search(rf"port 127\.0\.0\.1:{port} is already in use", lines[0])
