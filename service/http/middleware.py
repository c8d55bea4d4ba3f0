"""One ASGI middleware in front of every HTTP route: API keys, the body limit, JSON errors.

It wraps BentoML's routes and the mounted /v2 and /models apps alike, so every protocol path
sees the same rules and every refusal has the same ``{"error", "code"}`` body.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.auth import ApiKeys, key_from_headers
from service.errors import PayloadTooLarge, Unauthenticated, VisorError
from service.metrics import Metrics

log = logging.getLogger("visor.http")

# probes, scrapers, the web page and the API reference must work without a key (the page
# asks for one and sends it with its own API calls).
OPEN_PATHS = frozenset({
    "/livez", "/readyz", "/healthz", "/metrics", "/v2/health/live", "/v2/health/ready",
    "/", "/docs", "/docs.json", "/schema.json",
})  # fmt: skip
OPEN_PREFIXES = ("/static_content/", "/assets/", "/ui/", "/docs/")


def is_open(path: str) -> bool:
    """Whether ``path`` is answered without an API key."""
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def error_response(err: VisorError) -> Response:
    """The answer to every refusal on every HTTP route: ``{"error": sentence, "code": reason}``."""
    challenge = {"www-authenticate": 'Bearer realm="visor"'}
    headers = challenge if isinstance(err, Unauthenticated) else None
    return JSONResponse({"error": err.message, "code": err.reason}, err.http_status, headers)


class GuardMiddleware:
    """Checks the API key, enforces ``max_body_bytes`` and turns stray VisorErrors into JSON."""

    def __init__(self, app: ASGIApp, keys: ApiKeys, max_body_bytes: int) -> None:
        self.app = app
        self.keys = keys
        self.max_body = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path: str = scope["path"]
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        try:
            if not is_open(path):
                self.keys.check(key_from_headers(headers))
            declared = next((v for k, v in headers if k == "content-length"), None)
            if declared is not None and declared.isdigit() and int(declared) > self.max_body:
                raise self._too_large(int(declared))
        except VisorError as err:
            _count_refusal(path, err)
            await _discard_body(receive, limit=4 * self.max_body)
            return await error_response(err)(scope, receive, send)
        await self._forward(scope, receive, send)

    async def _forward(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False
        received = 0

        async def counted_receive() -> Message:
            # a chunked upload declares no length; count what arrives and stop at the
            # limit, so a client cannot stream an unbounded body into memory.
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise self._too_large(received)
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except VisorError as err:
            if started:
                raise
            await error_response(err)(scope, receive, send)

    def _too_large(self, size: int) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"The request body is {size} bytes, over this server's limit of {self.max_body} "
            "bytes (VISOR_MAX_BODY_BYTES): send fewer or smaller images per request."
        )


def _count_refusal(path: str, err: VisorError) -> None:
    """An inference request refused here (key, body limit) counts in visor_requests_total too."""
    if path in ("/classify", "/evaluate"):
        Metrics.shared().count_refusal("http", err.grpc_code.name)
    elif path.startswith("/v2/models/") and path.endswith("/infer"):
        Metrics.shared().count_refusal("rest_v2", err.grpc_code.name)


async def _discard_body(receive: Receive, limit: int) -> None:
    """Read (and drop) a modest unread body so the client gets the answer, not a reset."""
    seen = 0
    more: Any = True
    while more and seen <= limit:
        message = await receive()
        if message["type"] != "http.request":
            return
        seen += len(message.get("body", b""))
        more = message.get("more_body", False)


async def visor_error_response(_request: Request, err: Exception) -> Response:
    """Starlette exception handler: a VisorError raised by a route → its JSON answer."""
    assert isinstance(err, VisorError)
    return error_response(err)
