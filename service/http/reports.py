"""GET /models/{name}/{version}/card and .../report/{file}: what training wrote, read-only.

The card holds what GET /models leaves out to stay small (the calibration curves) and links to
the figures and MODEL_CARD.md of the version's ``report/`` folder. Files are looked up, never
joined from user input: the model and version must be folders the repository scan found, and
the file a plain name in ``report/`` with an allowed suffix.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response

from service.errors import ModelNotFound
from service.repository import scan
from service.types import ModelInfo

MODEL_CARD = "MODEL_CARD.md"
MODEL_CARD_HTML = "MODEL_CARD.html"  # rendered from MODEL_CARD.md, not a file on disk
FIGURE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*\.png$")
NO_SNIFF = {"X-Content-Type-Options": "nosniff"}


def report_folder(root: Path, name: str, version: int) -> Path:
    """``root/<name>/<version>/report``, found by scanning the repository (no path joining)."""
    folder = scan(root).get(name, {}).get(version)
    if folder is None:
        raise ModelNotFound(f"model {name!r} has no version {version} in the repository")
    return folder / "report"


def report_files(folder: Path) -> list[str]:
    """The servable files in ``folder``, sorted: PNG figures and MODEL_CARD.md."""
    if not folder.is_dir():
        return []
    return sorted(
        p.name
        for p in folder.iterdir()
        if (p.name == MODEL_CARD or FIGURE.match(p.name)) and _inside(p, folder)
    )


def _inside(path: Path, folder: Path) -> bool:
    # A symlink in report/ must not lead elsewhere on the server's disk.
    return path.is_file() and path.resolve().is_relative_to(folder.resolve())


def card_body(info: ModelInfo, files: list[str]) -> dict[str, Any]:
    base = f"/models/{quote(info.name)}/{info.version}/report/"
    meta = info.metadata
    body: dict[str, Any] = {
        "name": info.name,
        "version": info.version,
        "status": info.status.value,
        "labels": info.labels,
        "thresholds": meta.thresholds.model_dump(mode="json") if meta else None,
        "test_metrics": meta.metrics.model_dump(mode="json") if meta and meta.metrics else None,
        "report": {
            "images": {Path(f).stem: base + quote(f) for f in files if f != MODEL_CARD},
            "model_card": base + MODEL_CARD if MODEL_CARD in files else None,
            "model_card_html": base + MODEL_CARD_HTML if MODEL_CARD in files else None,
        },
    }
    if info.reason:
        body["reason"] = info.reason
    return body


def _target(request: Request) -> tuple[ModelInfo, Path]:
    engine = request.app.state.engine
    info: ModelInfo = engine.model_info(request.path_params["name"], request.path_params["version"])
    return info, report_folder(engine.settings.models, info.name, info.version)


# Sync handlers: Starlette runs them in its thread pool, so the directory scans and file
# checks stay off the event loop that also carries inference requests.
def model_card(request: Request) -> Response:
    info, folder = _target(request)
    return JSONResponse(card_body(info, report_files(folder)))


def render_markdown(text: str) -> str:
    """CommonMark with tables, as an HTML fragment; raw HTML in the text is escaped."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).enable("table").render(text)


def report_file(request: Request) -> Response:
    info, folder = _target(request)
    name = request.path_params["file"]
    if name == MODEL_CARD_HTML and MODEL_CARD in report_files(folder):
        html = render_markdown((folder / MODEL_CARD).read_text(encoding="utf-8"))
        return HTMLResponse(html, headers=NO_SNIFF)
    if name not in report_files(folder):
        raise ModelNotFound(
            f"model {info.name} v{info.version} has no report file {name!r}; "
            f"GET /models/{info.name}/{info.version}/card lists them."
        )
    media = "text/markdown; charset=utf-8" if name == MODEL_CARD else "image/png"
    return FileResponse(folder / name, media_type=media, headers=NO_SNIFF)
