"""The JSON routes the web page reads beside the API: the per-request limit in GET /models,
re-targeted thresholds with their certification, and the live view, against a real server on
the digits model the training CLI made."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.servers import HTTP, Server, start_server

KEY = {"X-API-Key": "routes-key"}


@pytest.fixture(scope="module")
def server(digits_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(
        tmp_path_factory.mktemp("routes"),
        digits_repo,
        api_keys="routes-key",
        workers=1,
        max_images_per_request=7,
    )
    yield srv
    srv.stop()


def pngs(digits_repo: Path, labels: str) -> list[tuple[str, bytes]]:
    return [
        (label, min((digits_repo.parent / "data" / label).glob("*.png")).read_bytes())
        for label in labels
    ]


def classify(server: Server, images: list[tuple[str, bytes]], **fields: str) -> dict[str, Any]:
    files = [("image", (f"{i}.png", b, "image/png")) for i, (_, b) in enumerate(images)]
    r = HTTP.post(f"{server.http}/classify", files=files, data=fields, headers=KEY)
    assert r.status_code == 200, r.text
    return r.json()


def test_models_says_the_per_request_limit(server: Server) -> None:
    body = HTTP.get(f"{server.http}/models", headers=KEY).json()
    assert body["limits"] == {"max_images_per_request": 7}


@pytest.mark.parametrize(
    ("metric", "target"),
    [("precision", 0.9), ("precision", 0.99), ("recall", 0.8), ("recall", 1.0)],
)
def test_retargeted_thresholds_are_those_classify_applies(
    server: Server, digits_repo: Path, metric: str, target: float
) -> None:
    r = HTTP.get(
        f"{server.http}/models/digits/1/thresholds",
        params={f"target_{metric}": str(target)},
        headers=KEY,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["policy"], body["target"]) == (metric, target)
    answer = classify(server, pngs(digits_repo, "7"), **{f"target_{metric}": str(target)})
    for choice in body["per_class"]:
        label = choice["label"]
        assert choice["threshold"] == answer["thresholds"][label]
        assert choice["certified"] == answer["certified"][label]
        assert choice["certified"] == (choice["lower_bound"] >= target)
        assert choice["best_certified"] >= choice["lower_bound"]
        if choice["certified"]:
            assert choice["needed"] is None


@pytest.mark.parametrize(
    "query",
    ["", "target_precision=2", "target_precision=x", "target_precision=0.9&target_recall=0.9"],
)
def test_a_bad_target_is_refused(server: Server, query: str) -> None:
    r = HTTP.get(f"{server.http}/models/digits/1/thresholds?{query}", headers=KEY)
    assert r.status_code == 400 and r.json()["code"]


def test_the_live_view_counts_feedback_as_the_gauges_do(server: Server, digits_repo: Path) -> None:
    before = HTTP.get(f"{server.http}/models/digits/1/live", headers=KEY).json()
    images = pngs(digits_repo, "0123")
    answer = classify(server, images)
    truth = [label for label, _ in images]
    r = HTTP.post(
        f"{server.http}/feedback",
        json={"request_id": answer["request_id"], "labels": truth},
        headers=KEY,
    )
    assert r.status_code == 200, r.text
    view = HTTP.get(f"{server.http}/models/digits/1/live", headers=KEY).json()
    assert view["feedback"] == before["feedback"] + 4
    assert (view["policy"], view["target"]) == ("precision", 0.95)
    rows = {c["label"]: c for c in view["per_class"]}
    for prediction, label in zip(answer["predictions"], truth, strict=True):
        hit = label in prediction["labels"]  # the calibrated thresholds are the served ones
        assert rows[label]["recall"]["support"] >= 1
        assert (rows[label]["tp"] >= 1) if hit else (rows[label]["fn"] >= 1)
    for row in rows.values():
        for metric, trials in (
            ("precision", row["tp"] + row["fp"]),
            ("recall", row["tp"] + row["fn"]),
        ):
            estimate = row[metric]
            assert estimate["support"] == trials
            if trials:
                assert estimate["value"] == pytest.approx(row["tp"] / trials)
                assert estimate["lower_bound"] <= estimate["value"] <= estimate["upper_bound"]
            else:
                assert estimate["value"] is None


def test_the_live_view_of_an_unknown_version_is_a_404(server: Server) -> None:
    assert HTTP.get(f"{server.http}/models/digits/9/live", headers=KEY).status_code == 404
    assert HTTP.get(f"{server.http}/models/digits/9/thresholds", headers=KEY).status_code == 404
