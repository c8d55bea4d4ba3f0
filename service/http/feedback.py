"""``POST /feedback``: the ground truth of an answered request, keyed by its ``request_id``.

Body: ``{"request_id": "...", "labels": ["7", null, "1"]}`` (one true label per image of the
request, null for an unknown one), or ``{"request_id": "...", "index": 2, "labels": ["1"]}``.
The engine feeds it to the live precision/recall of the model version that answered.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from service.errors import InvalidInput, VisorError
from service.http.middleware import error_response
from service.http.tensors import load_json


async def feedback(request: Request) -> Response:
    """Record ground truth; 404 for an unknown or expired request id, 400 for bad labels."""
    try:
        request_id, labels, index = _read(await request.body())
        done = await request.app.state.engine.feedback(request_id, labels, index)
    except VisorError as err:
        # answered here: the mounted app's own error middleware would turn a raised
        # VisorError into a 500 before Visor's guard sees it.
        return error_response(err)
    return JSONResponse(
        {
            "request_id": request_id,
            "model": done.model,
            "version": done.version,
            "accepted": done.accepted,
        }
    )


def _read(body: bytes) -> tuple[str, list[Any], int | None]:
    fields = load_json(body, "body")
    if not isinstance(fields, dict):
        raise InvalidInput('Send a JSON object: {"request_id": "...", "labels": [...]}.')
    request_id, labels = fields.get("request_id"), fields.get("labels")
    if not isinstance(request_id, str) or not request_id:
        raise InvalidInput("'request_id' is required: the id a /classify or infer answer gave.")
    if not isinstance(labels, list):
        raise InvalidInput("'labels' must be a list: one true label per image of the request.")
    return request_id, labels, fields.get("index")
