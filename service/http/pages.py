"""The routes for people: the web page at /, the API reference at /docs, the document, reports.

Everything is served from files shipped with the code, so the page and the reference work on a
machine without internet access. The reference reuses the Swagger UI build that BentoML ships
(``bento.swagger_assets``) instead of a second copy.
"""

from __future__ import annotations

import functools
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from contract.imaging import image_suffixes
from service.http.bento import swagger_assets
from service.http.live import live_view
from service.http.openapi import document
from service.http.reports import model_card, report_file
from service.http.retarget import retargeted_thresholds

UI_DIR = Path(__file__).parent / "ui"


@functools.cache
def index_page() -> str:
    """The page, its file picker offering every suffix training and scoring take."""
    page = (UI_DIR / "index.html").read_text()
    return page.replace("{{IMAGE_SUFFIXES}}", ",".join(sorted(image_suffixes())))


async def index(_request: Request) -> Response:
    return HTMLResponse(index_page())


async def api_reference(_request: Request) -> Response:
    return FileResponse(UI_DIR / "docs.html")


async def openapi_document(_request: Request) -> Response:
    return JSONResponse(document())


def page_routes() -> list[BaseRoute]:
    """Routes to add to the app mounted at "/"; listed before BentoML's own "/" and /docs.json,
    so they replace BentoML's stock Swagger page and its generated document."""
    return [
        Route("/", index, methods=["GET"]),
        Route("/docs", api_reference, methods=["GET"]),
        Route("/docs.json", openapi_document, methods=["GET"]),
        Route("/models/{name}/{version}/card", model_card, methods=["GET"]),
        Route("/models/{name}/{version}/report/{file}", report_file, methods=["GET"]),
        Route("/models/{name}/{version}/thresholds", retargeted_thresholds, methods=["GET"]),
        Route("/models/{name}/{version}/live", live_view, methods=["GET"]),
        Mount("/ui", StaticFiles(directory=UI_DIR), name="ui"),
        Mount("/docs/assets", StaticFiles(directory=swagger_assets()), name="swagger-ui"),
    ]
