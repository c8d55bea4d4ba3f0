"""The HTTP front-end, a BentoML service: /classify, /evaluate, /models, /v2 and the web page.

Each BentoML worker process builds one ``VisorServer`` (engine, gRPC front-end) in ``__init__``;
the start-up hook starts it on the worker's own event loop, so HTTP and gRPC requests meet in
the same batcher. ``python -m service serve`` (``service.http.bento``) or ``bentoml serve
service.http.frontend:Visor`` runs it; settings come from ``VISOR_`` environment variables.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
import threading
import time
from typing import TYPE_CHECKING, Any

import bentoml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.auth import ApiKeys
from service.errors import InvalidInput, ModelUnavailable, VisorError
from service.http import bento, connections, fastpath, wire
from service.http.feedback import feedback
from service.http.middleware import GuardMiddleware, visor_error_response
from service.http.middleware import error_response as _error
from service.http.pages import page_routes
from service.http.schemas import ClassifyInput, ClassifyOutput, EvaluateInput, EvaluateOutput
from service.http.v2 import create_v2_app, server_metadata
from service.settings import Settings
from service.types import Classification

if TYPE_CHECKING:
    from service.server import VisorServer

log = logging.getLogger("visor.http")


@functools.cache
def load_settings() -> Settings:
    """The worker's settings (from ``VISOR_`` variables), read once on first use."""
    return Settings()


def _guard(app: Any) -> GuardMiddleware:
    settings = load_settings()
    return GuardMiddleware(app, ApiKeys(settings.api_keys), settings.max_body_bytes)


async def list_models(request: Request) -> Response:
    """GET /models: every known version (labels, input, thresholds, metrics, device), each
    model's rollout, limits."""
    engine = request.app.state.engine
    models = engine.models()
    return JSONResponse(
        {
            "models": [wire.model_entry(m) for m in models],
            "rollouts": engine.rollouts.views(sorted({m.name for m in models})),
            "limits": {"max_images_per_request": engine.settings.max_images_per_request},
        }
    )


v2_app = create_v2_app()
# "/v2" itself (server metadata) lives here: a mount only matches "/v2/...".
# "/" (the web page), /docs and /docs.json here replace BentoML's own (pages.py).
models_app = Starlette(
    routes=[
        Route("/models", list_models, methods=["GET"]),
        Route("/feedback", feedback, methods=["POST"]),
        Route("/v2", server_metadata),
        *page_routes(),
    ],
    exception_handlers={VisorError: visor_error_response},
)


@bentoml.asgi_app(v2_app, path="/v2", name="v2")
@bentoml.asgi_app(models_app, path="/", name="models")
@bentoml.service(name="visor", traffic={"timeout": 300})
class Visor:
    """Image classification over HTTP (this service) and gRPC (started beside it)."""

    def __init__(self) -> None:
        # Imported here, in the worker: BentoML's supervisor imports this module too, and
        # without the engine it never loads ONNX Runtime (docs/benchmarks.md, issue 25).
        from service.server import VisorServer

        self.settings = load_settings()
        self.server: VisorServer = VisorServer(self.settings)
        self.engine = self.server.engine

    @bentoml.on_startup
    async def start(self) -> None:
        for app in (v2_app, models_app):
            app.state.engine = self.engine
        v2_app.state.timeout_s = self.settings.request_timeout_s
        v2_app.state.max_body = self.settings.max_body_bytes
        await self.server.start()
        self._chain_signals()

    @bentoml.on_shutdown
    async def stop(self) -> None:
        await self.server.stop()

    # Async, so BentoML answers /readyz and /livez on the loop (a sync hook costs a
    # thread hop on every probe).
    async def __is_ready__(self) -> bool:
        return bool(self.engine.ready)

    async def __is_alive__(self) -> bool:
        return bool(self.engine.live)

    @bentoml.api(route="/classify", input_spec=ClassifyInput, output_spec=ClassifyOutput)
    async def classify(self, request: Request) -> Response:
        """Classify images: probabilities by label, top-k and thresholded labels per image."""
        try:
            result = await self._run(request)
            return Response(wire.classification_body(result), media_type="application/json")
        except VisorError as err:
            return _error(err)

    @bentoml.api(route="/evaluate", input_spec=EvaluateInput, output_spec=EvaluateOutput)
    async def evaluate(self, request: Request) -> Response:
        """Labelled images → accuracy, per-class precision/recall/F1, confusion matrix."""
        try:
            result = await self._run(request, needs_truth=True)
            return Response(wire.evaluation_body(result), media_type="application/json")
        except VisorError as err:
            return _error(err)

    async def _run(self, request: Request, needs_truth: bool = False) -> Classification:
        """Read the body, then classify; a refusal while reading is counted like any other."""
        try:
            oip = await wire.read_request(
                request, self.settings.max_images_per_request, self._model
            )
            if needs_truth and oip.parameters.get("labels") in (None, "", []):
                raise InvalidInput("/evaluate needs the true 'labels', one per image.")
        except VisorError as err:
            self.engine.record_failure(None, None, "http", err)
            raise
        deadline = time.monotonic() + self.settings.request_timeout_s
        _, result = await self.engine.infer(oip, protocol="http", deadline=deadline)
        return result

    def _model(self) -> str:
        names = sorted({m.name for m in self.engine.models()})
        if not names:
            raise ModelUnavailable("No model is loaded: the model repository is empty.")
        if len(names) != 1:
            raise InvalidInput(
                f"Name the model with 'model': this server has {', '.join(names) or 'none'}."
            )
        return names[0]

    def _chain_signals(self) -> None:
        # uvicorn stops accepting HTTP as soon as SIGTERM arrives but runs the shutdown
        # hook only after in-flight HTTP requests finished; chaining its handler starts the gRPC
        # drain at the same moment, so both protocols stop taking new work together.
        if threading.current_thread() is not threading.main_thread():
            return
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(sig)

            def handler(signum: int, frame: Any, previous: Any = previous) -> None:
                # The supervisor holds the HTTP socket too: without this, connections made
                # during the drain wait in its backlog until exit, then get reset.
                connections.close_listener(self.settings.http_port)
                loop.call_soon_threadsafe(self.server.begin_stop)
                if callable(previous):
                    previous(signum, frame)

            signal.signal(sig, handler)


Visor.add_asgi_middleware(_guard)  # type: ignore[arg-type]
# A BentoML worker imports this module right before it builds its ASGI app and uvicorn
# server: the one point where Visor can change how either is built.
bento.install_in_worker(load_settings(), lambda: _guard(fastpath.endpoint(v2_app)))
