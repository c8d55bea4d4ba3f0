"""BentoML's per-request timeout, without the timer that outlives every request.

BentoML (1.4.x, and its main branch) wraps every HTTP request in ``TimeoutMiddleware``, which
arms ``loop.call_later(traffic.timeout, ...)`` and never cancels it: each request leaves a
``TimerHandle``, a future and a copy of the request's ``contextvars.Context`` on the event loop
for the whole ``traffic.timeout``: the worker's memory growth under load (docs/http.md, "Memory").
``traffic.timeout`` must be > 0, so configuration cannot switch the middleware off.
``bento.install_in_worker`` swaps the class BentoML builds its middleware stack from for this
one: the same contract (504 when no answer has started in time), with the timer cancelled as
soon as the answer starts or the request ends.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import DeadlineExceeded
from service.http.middleware import error_response


class RequestTimeoutMiddleware:
    """504 when the app has not started its answer within ``timeout`` seconds (None: never)."""

    def __init__(self, app: ASGIApp, timeout: float | None) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        started = False
        timer = asyncio.timeout(self.timeout)

        async def timed_send(message: Message) -> None:
            nonlocal started
            if not started:
                started = True
                timer.reschedule(None)  # the answer started: streaming it has no cutoff
            await send(message)

        try:
            async with timer:
                await self.app(scope, receive, timed_send)
        except TimeoutError:
            if started or not timer.expired():
                raise
            err = DeadlineExceeded(f"Not able to process the request in {self.timeout} seconds")
            await error_response(err)(scope, receive, send)
