"""SIGTERM on a real server: a connection opened during the drain is refused (or answered 503)
at once, instead of waiting unaccepted in the supervisor's backlog until the process exits."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

from tests.helpers.models import tiny_repo
from tests.helpers.servers import start_server

IN_FLIGHT = (
    b"POST /classify HTTP/1.1\r\nHost: visor\r\nContent-Type: application/json\r\n"
    b"Content-Length: 1000\r\n\r\n{"
)


def _new_connection_outcome(port: int) -> str:
    """'refused', '503', 'served' (the worker had not taken the signal yet) or 'parked'."""
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    except ConnectionRefusedError:
        return "refused"
    with sock:
        try:
            sock.settimeout(5)
            sock.sendall(b"GET /livez HTTP/1.1\r\nHost: visor\r\n\r\n")
            head = sock.recv(64)
        except TimeoutError:
            return "parked"
        except ConnectionError:
            return "refused"
    if head.startswith(b"HTTP/1.1 503"):
        return "503"
    return "served" if head else "refused"


def test_connection_after_sigterm_is_refused_not_parked(workdir: Path) -> None:
    server = start_server(workdir, tiny_repo(workdir / "sigterm"), grace_period_s=20.0)
    port = int(server.http.rsplit(":", 1)[1])
    try:
        # a request in flight (headers in, body still coming) keeps the worker draining
        busy = socket.create_connection(("127.0.0.1", port))
        busy.sendall(IN_FLIGHT)
        time.sleep(0.5)
        server.proc.send_signal(signal.SIGTERM)
        outcome, end = "served", time.monotonic() + 15
        while outcome == "served" and time.monotonic() < end:
            outcome = _new_connection_outcome(port)
            time.sleep(0.1)
        assert outcome in ("refused", "503"), outcome
        assert server.proc.poll() is None, "refused only because the server had already exited"
        busy.close()
    finally:
        server.stop(signal.SIGKILL)
