"""The request timeout that replaces BentoML's: same answers, no timer left behind per request."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from service.http.bento import install_request_timeout
from service.http.deadline import RequestTimeoutMiddleware


async def fast(_request: object) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def slow(_request: object) -> PlainTextResponse:
    await asyncio.sleep(30)
    return PlainTextResponse("late")


APP = Starlette(routes=[Route("/fast", fast), Route("/slow", slow)])


def _client(timeout: float) -> httpx.AsyncClient:
    app = RequestTimeoutMiddleware(APP, timeout=timeout)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://visor")


@pytest.mark.anyio
async def test_no_timer_outlives_a_request() -> None:
    loop = asyncio.get_running_loop()
    async with _client(timeout=300) as client:
        before = len(loop._scheduled)  # NOTE: private, but it is exactly what leaked
        for _ in range(50):
            assert (await client.get("/fast")).text == "ok"
        # BentoML's TimeoutMiddleware leaves one live timer per request here (for 300 s)
        live = [h for h in loop._scheduled if not h.cancelled()]
        assert len(live) <= before


@pytest.mark.anyio
async def test_answer_not_started_in_time_is_504() -> None:
    async with _client(timeout=0.2) as client:
        response = await client.get("/slow")
    assert response.status_code == 504
    assert "0.2 seconds" in response.json()["error"]


def test_bentoml_builds_its_apps_with_ours() -> None:
    # fails if a BentoML upgrade stops importing the class from where install() replaces it
    from bentoml._internal.server.base_app import BaseAppFactory

    install_request_timeout()

    class Factory(BaseAppFactory):
        name = "probe"

    middleware = Factory(timeout=5, max_concurrency=None).middlewares
    assert [m.cls for m in middleware] == [RequestTimeoutMiddleware]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
