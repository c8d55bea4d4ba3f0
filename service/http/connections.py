"""The HTTP port's connections: read timeouts, a cap, and no new ones once SIGTERM arrived.

uvicorn (under BentoML) has only a keep-alive timeout, armed after a response: a connection that
never sends a request, sends its headers a byte a second (slowloris) or trickles its body is
held open for ever, and uvicorn's ``limit_concurrency`` answers 503 to a request but keeps every
idle connection. Nothing at the ASGI level can help (the app sees a request only once its
headers are in), so the guard sits in the protocol: each connection is in one phase at a time,
and a phase that lasts past its limit closes the connection.

- ``idle``: no request in progress (a fresh connection, or after a response) → ``idle_timeout_s``
- ``header``: part of a request line or headers arrived → ``http_header_timeout_s`` from then
- ``body``: headers in, body still arriving → ``http_body_timeout_s`` from the headers
- ``busy``: the app is working on the request → no limit here (the request deadline rules)

BentoML builds the uvicorn ``Config`` inside its worker with ``http="auto"``; ``install()`` points
that name at ``GuardedHttpProtocol`` (a subclass of the protocol "auto" would pick). At SIGTERM,
``close_listener`` makes the port refuse new connections (see its docstring).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from typing import Any

import psutil
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from service.settings import Settings

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
    """uvicorn's HTTP/1.1 protocol with a timer on the phase each connection is in."""

    limits: ConnectionLimits | None = None  # set by install(); None: uvicorn as it is

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._phase: str | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._header_bytes = 0
        limits = self.limits
        if limits is not None and len(self.connections) > limits.max_connections:
            # NOTE: over the cap: close before reading anything, the cheapest refusal there is.
            transport.close()
            return
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        waiting = self._phase in (IDLE, HEADER)
        super().data_received(data)
        # NOTE: bytes while idle that did not start a request cycle are part of a request line
        # or headers; the header clock starts with the first of them, not with each.
        partial = waiting and not self._in_request()
        if partial and self._headers_too_large(len(data)):
            return
        self._watch(partial=partial)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch()

    def _headers_too_large(self, size: int) -> bool:
        # NOTE: httptools keeps every header byte until the headers end, with no limit of its
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
            return  # NOTE: the clock of a phase runs from its start, however many bytes arrive
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


def install(settings: Settings) -> None:
    """Make this process's uvicorn (BentoML's worker) serve HTTP with ``GuardedHttpProtocol``."""
    from uvicorn import config

    GuardedHttpProtocol.limits = ConnectionLimits(settings)
    config.HTTP_PROTOCOLS["auto"] = f"{__name__}:GuardedHttpProtocol"


def close_listener(port: int) -> None:
    """Stop the kernel accepting connections on ``port``, for every process sharing its socket.

    BentoML's supervisor and each worker hold the same listening socket; uvicorn closing its
    own descriptor leaves it listening. ``shutdown`` acts on the socket itself: new connections
    are refused, and those waiting unaccepted in its backlog are reset now rather than at exit.
    """
    for conn in psutil.Process().net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.fd >= 0:
            with socket.socket(fileno=os.dup(conn.fd)) as sock, contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RD)
