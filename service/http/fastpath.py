"""REST inference past BentoML's routing: ``POST /v2/models/{model}[/versions/{v}]/infer``.

A profile of one worker at 32 REST requests in flight (digits, py-spy, issue 25) put about a
quarter of its event loop's busy time in the layers every request crosses before Visor's
handler runs: Starlette's error and exception middlewares and router, BentoML's context,
tracing, timeout and metrics middlewares, the mount of the /v2 app and its own router. For a
small model that is as much as the handler itself.

An inference request gets the layers that do something for it, in BentoML's order:

    request metrics (BentoML's own families) → request timeout (504) → API key and body limit
    (``GuardMiddleware``) → ``v2.infer``, a ``VisorError`` answered as JSON

and every other request, and every request when a skipped layer has work to do (tracing, the
access log, CORS, a concurrency cap; ``FastPathPlan.wanted``), goes through BentoML's app as
before. The answers are the same bytes either way (tests/service/http/test_fastpath.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import VisorError
from service.http.middleware import error_response

if TYPE_CHECKING:
    from starlette.applications import Starlette

INFER_PATH = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?/infer")


@dataclass(frozen=True)
class FastPathPlan:
    """What the fast path needs, and whether this worker's configuration allows it."""

    enabled: bool  # VISOR_HTTP_FAST_INFER
    tracing: bool
    access_log: bool
    cors: bool
    max_concurrency: int | None

    @property
    def wanted(self) -> bool:
        return not self.why_not

    @property
    def why_not(self) -> str:
        """Empty when the fast path is on, else what keeps it off."""
        reasons = {
            "VISOR_HTTP_FAST_INFER=false": not self.enabled,
            "tracing": self.tracing,
            "the access log": self.access_log,
            "CORS": self.cors,
            "a concurrency cap": bool(self.max_concurrency),
        }
        return ", ".join(name for name, on in reasons.items() if on)


def endpoint(v2_app: Starlette) -> ASGIApp:
    """``v2.infer`` as a bare ASGI app: the path's parameters and the /v2 app set in the scope
    the way the router would set them."""
    from service.http.v2 import infer

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = v2_app
        try:
            response = await infer(Request(scope, receive))
        except VisorError as err:  # the /v2 app's exception handler, without the app
            response = error_response(err)
        await response(scope, receive, send)

    return app


class InferFastPath:
    """In front of uvicorn's app: inference requests to ``fast``, everything else to ``app``."""

    def __init__(self, app: ASGIApp, fast: ASGIApp) -> None:
        self.app = app
        self.fast = fast

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            match = INFER_PATH.fullmatch(scope["path"])
            if match is not None:
                model, version = match.groups()
                params: dict[str, Any] = {"model": model}
                if version is not None:
                    params["version"] = version
                scope["path_params"] = params
                return await self.fast(scope, receive, send)
        return await self.app(scope, receive, send)
