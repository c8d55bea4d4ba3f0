"""The web page, the API reference page and the report routes against a real server."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin

import pytest

from contract.imaging import image_suffixes
from tests.helpers.models import CARD_TEXT, png, site_repo
from tests.helpers.servers import HTTP, KEY, Server, start_server


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("pages")
    srv = start_server(work, site_repo(work), api_keys="key-one,key-two")
    yield srv
    srv.stop()


def local_assets(html: str) -> list[str]:
    """Every file and link the page names; relative, so it works under a path prefix."""
    found = re.findall(r'(?:src|href)="([^"#][^"]*)"', html)
    return [a for a in found if not a.startswith("data:")]


@pytest.mark.parametrize(("page", "title"), [("/", "<title>Visor</title>"), ("/docs", "API")])
def test_pages_and_every_file_they_load_are_served_without_a_key(
    site: Server, page: str, title: str
) -> None:
    r = HTTP.get(f"{site.http}{page}")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert title in r.text
    # NOTE: offline: nothing the page loads comes from another host
    assert not re.search(r'(?:src|href)="(?:https?:)?//', r.text)
    assets = local_assets(r.text)
    assert any(a.endswith(".js") for a in assets)
    assert not [a for a in assets if a.startswith("/")], "an absolute path breaks under a prefix"
    for asset in assets:
        assert HTTP.get(urljoin(f"{site.http}{page}", asset)).status_code == 200, asset


def test_the_file_picker_offers_every_format_training_and_scoring_take(site: Server) -> None:
    html = HTTP.get(f"{site.http}/").text
    match = re.search(r'id="files"[^>]*accept="([^"]*)"', html)
    assert match, html
    accept = match.group(1).split(",")
    assert accept[0] == "image/*" and set(accept[1:]) == image_suffixes()
    assert ".tif" in accept and ".tiff" in accept


def test_app_modules_import_only_local_files(site: Server) -> None:
    app = HTTP.get(f"{site.http}/ui/app.js")
    assert app.headers["content-type"].startswith("text/javascript")
    seen, todo = set(), ["app.js"]
    while todo:
        name = todo.pop()
        seen.add(name)
        text = HTTP.get(f"{site.http}/ui/{name}").text
        for module in re.findall(r'from "\./([\w.]+)"', text):
            if module not in seen:
                todo.append(module)
    assert {"app.js", "api.js", "curves.js", "models.js", "results.js"} <= seen


def test_card_has_curves_and_report_links(site: Server) -> None:
    r = HTTP.get(f"{site.http}/models/tiny/1/card", headers=KEY)
    assert r.status_code == 200, r.text
    card = r.json()
    assert (card["name"], card["version"], card["status"]) == ("tiny", 1, "ready")
    assert set(card["thresholds"]["curves"]) == {"top", "bottom", "left"}
    assert card["report"]["images"] == {
        "pr_curves": "/models/tiny/1/report/pr_curves.png",
        "training_curves": "/models/tiny/1/report/training_curves.png",
    }
    assert card["report"]["model_card"] == "/models/tiny/1/report/MODEL_CARD.md"
    models = HTTP.get(f"{site.http}/models", headers=KEY).json()["models"]
    assert all("curves" not in m.get("thresholds", {}) for m in models)


def test_report_files_are_served_read_only(site: Server) -> None:
    image = HTTP.get(f"{site.http}/models/tiny/1/report/pr_curves.png", headers=KEY)
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert image.content == png((0, 0, 200))
    card = HTTP.get(f"{site.http}/models/tiny/1/report/MODEL_CARD.md", headers=KEY)
    assert card.text == CARD_TEXT and card.headers["content-type"].startswith("text/markdown")
    assert (
        HTTP.put(f"{site.http}/models/tiny/1/report/MODEL_CARD.md", headers=KEY).status_code == 405
    )


def test_the_model_card_is_rendered_as_html_with_raw_html_escaped(site: Server) -> None:
    url = HTTP.get(f"{site.http}/models/tiny/1/card", headers=KEY).json()["report"]
    r = HTTP.get(f"{site.http}{url['model_card_html']}", headers=KEY)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "<h1>tiny v1</h1>" in r.text and "<table>" in r.text and "<td>0.9</td>" in r.text
    assert "<script>" not in r.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in r.text


@pytest.mark.parametrize(
    "path",
    [
        "/models/tiny/1/report/escape.png",  # a symlink out of report/
        "/models/tiny/1/report/notes.txt",  # not a figure or the card
        "/models/tiny/1/report/..%2Fmetadata.json",
        "/models/tiny/1/report/%2E%2E%2F%2E%2E%2F..%2Fsecret.png",
        "/models/..%2F..%2Ftiny/1/report/pr_curves.png",
        "/models/tiny/1%2F..%2F1/report/pr_curves.png",
        "/models/tiny/3/report/pr_curves.png",
        "/models/nope/1/card",
        "/models/tiny/x/card",  # a malformed version: 400, as on every route
    ],
)
def test_nothing_outside_report_is_served(site: Server, path: str) -> None:
    r = HTTP.get(f"{site.http}{path}", headers=KEY)
    assert r.status_code == (400 if "/x/" in path else 404), (path, r.status_code)
    assert r.content != png((0, 0, 0))
    if r.headers["content-type"] == "application/json":
        want = "invalid_input" if "/x/" in path else "not_found"
        assert r.json()["code"] == want and r.json()["error"]


def test_a_failed_version_shows_its_reason(site: Server) -> None:
    models = HTTP.get(f"{site.http}/models", headers=KEY).json()["models"]
    failed = next(m for m in models if m["version"] == 2)
    assert failed["status"] == "failed" and "sha256" in failed["reason"].lower()
    card = HTTP.get(f"{site.http}/models/tiny/2/card", headers=KEY).json()
    assert card["status"] == "failed" and card["reason"] == failed["reason"]
    assert card["report"] == {"images": {}, "model_card": None, "model_card_html": None}


@pytest.mark.parametrize("path", ["/models/tiny/1/card", "/models/tiny/1/report/pr_curves.png"])
def test_card_and_report_need_the_key_like_models(site: Server, path: str) -> None:
    r = HTTP.get(f"{site.http}{path}")
    assert r.status_code == 401 and r.json()["code"] == "unauthenticated"


def test_static_files_stay_inside_their_folder(site: Server, tmp_path: Path) -> None:
    for path in ("/ui/..%2Fpages.py", "/ui/../pages.py", "/docs/assets/..%2F..%2F__init__.py"):
        r = HTTP.get(f"{site.http}{path}")
        assert r.status_code in (401, 404), path
        assert b"import" not in r.content


@pytest.mark.parametrize(("metric", "target"), [("precision", 0.8), ("recall", 0.55)])
def test_retargeting_curves_without_counts_matches_classify(
    site: Server, metric: str, target: float
) -> None:
    """Metadata with curves but no counts: point estimates, nothing certified, as /classify."""
    field = f"target_{metric}"
    r = HTTP.get(f"{site.http}/models/tiny/1/thresholds", params={field: target}, headers=KEY)
    assert r.status_code == 200, r.text
    files = [("image", ("a.png", png((90, 90, 90)), "image/png"))]
    answer = HTTP.post(
        f"{site.http}/classify",
        files=files,
        data={"model": "tiny", "version": "1", field: str(target)},
        headers=KEY,
    ).json()
    for choice in r.json()["per_class"]:
        assert choice["threshold"] == answer["thresholds"][choice["label"]]
        assert choice["certified"] is False and choice["lower_bound"] is None
