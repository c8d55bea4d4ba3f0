"""GET /models/{name}/{version}/live: the page's live view of a served version, as JSON.

The same numbers the ``visor_live_*`` and ``visor_drift_*`` gauges export, of the worker that
answers (each worker keeps its own windows, as each exports its own gauges): feedback images,
per-class precision and recall with their bounds and support, the target, and the drift.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response


# Async: the version's monitor lives on the event loop that serves inference.
async def live_view(request: Request) -> Response:
    engine = request.app.state.engine
    return JSONResponse(
        engine.live_view(request.path_params["name"], request.path_params["version"])
    )
