"""Limits of a real server: slow and idle clients closed by the configured timeouts on both ports,
the connection cap, and a request larger than the whole queue refused as the client's error.

The server runs with one-second limits; every check only asks "closed before a generous bound",
never how fast. Raw sockets play the clients: one that sends nothing, one that sends its headers a
byte at a time (slowloris), one that trickles its body, and more connections than the cap.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers.models import encode, image_pixels, tiny_repo
from tests.helpers.servers import Server, start_server

BOUND_S = 20.0  # generous: the limits below are 1 s
CAP = 6
QUEUE = 4


@pytest.fixture(scope="module")
def server(workdir: Path) -> Iterator[Server]:
    srv = start_server(
        workdir,
        tiny_repo(workdir / "limits"),
        idle_timeout_s=1.0,
        http_header_timeout_s=1.0,
        http_body_timeout_s=1.0,
        grpc_handshake_timeout_s=1.0,
        max_connections=CAP,
        max_queue_size=QUEUE,
        workers=1,  # NOTE: the caps are per worker; with two, CAP + 4 connections fit in both
    )
    yield srv
    srv.stop()


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def closed_by_server(port: int, drip: bytes = b"", bound: float = BOUND_S) -> bool:
    """Connect, send ``drip`` one byte at a time (a few a second); True once the server closes."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(0.3)
        end, sent = time.monotonic() + bound, 0
        while time.monotonic() < end:
            try:
                if sent < len(drip):
                    sock.sendall(drip[sent : sent + 1])
                    sent += 1
                if sock.recv(4096) == b"":
                    return True
            except TimeoutError:
                continue
            except OSError:  # reset, broken pipe: closed all the same
                return True
    return False


SLOW_HEADERS = b"GET /readyz HTTP/1.1\r\nHost: visor\r\nX-Slow: " + b"s" * 400
SLOW_BODY = (
    b"POST /classify HTTP/1.1\r\nHost: visor\r\nContent-Type: application/json\r\n"
    b"Content-Length: 100000\r\n\r\n" + b"[" * 400
)
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" * 20


def test_idle_connection_closed_on_http_port(server: Server) -> None:
    assert closed_by_server(_port(server.http))


def test_idle_connection_closed_on_grpc_port(server: Server) -> None:
    assert closed_by_server(_port(server.grpc))


def test_slowloris_headers_closed(server: Server) -> None:
    assert closed_by_server(_port(server.http), SLOW_HEADERS)


def test_slow_body_closed(server: Server) -> None:
    assert closed_by_server(_port(server.http), SLOW_BODY)


def test_slow_http2_preface_closed_on_grpc_port(server: Server) -> None:
    assert closed_by_server(_port(server.grpc), HTTP2_PREFACE)


@pytest.mark.parametrize("port", ["http", "grpc"])
def test_connections_past_the_cap_closed_at_once(server: Server, port: str) -> None:
    address = ("127.0.0.1", _port(getattr(server, port)))
    socks = [socket.create_connection(address) for _ in range(CAP + 4)]
    try:
        # NOTE: the surplus is closed before the idle timeout could close anything: read each
        # socket with a short wait, and count the ones still open right after.
        time.sleep(0.2)
        closed = 0
        for sock in socks:
            sock.setblocking(False)
            try:
                closed += sock.recv(1) == b""
            except BlockingIOError:
                pass
            except OSError:
                closed += 1
        assert closed >= 4
    finally:
        for sock in socks:
            sock.close()


def test_keep_alive_client_still_served(server: Server) -> None:
    # a client that behaves: two requests on one connection, well inside the limits
    with httpx.Client(base_url=server.http, timeout=10) as client:
        assert client.get("/readyz").status_code == 200
        assert client.get("/v2/health/ready").status_code == 200


@pytest.mark.parametrize("route", ["/classify", "/v2/models/tiny/infer"])
def test_request_larger_than_the_queue_is_400(server: Server, route: str) -> None:
    png = encode(image_pixels("top"))
    with httpx.Client(base_url=server.http, timeout=20) as client:
        for n in (QUEUE + 1, QUEUE):
            if route == "/classify":
                files = [("image", (f"{i}.png", png, "image/png")) for i in range(n)]
                response = client.post(route, files=files)
            else:
                tensor = {"name": "image", "shape": [n, 8, 8, 1], "datatype": "UINT8"}
                response = client.post(route, json={"inputs": [{**tensor, "data": [0] * n * 64}]})
            if n > QUEUE:
                assert response.status_code == 400, response.text
                assert "can ever queue" in response.json()["error"]
            else:  # the server keeps serving, and a request that fits is answered
                assert response.status_code == 200, response.text


def test_oversized_headers_get_431(server: Server) -> None:
    huge = b"GET /readyz HTTP/1.1\r\nHost: visor\r\n" + b"X-Pad: " + b"p" * 200_000
    with socket.create_connection(("127.0.0.1", _port(server.http))) as sock:
        sock.settimeout(BOUND_S)
        with contextlib.suppress(OSError):  # the server may close before it read it all
            sock.sendall(huge)
        answer = sock.recv(4096)
    # the header timeout would close the connection without a word: a 431 is the size limit
    assert answer.startswith(b"HTTP/1.1 431")
