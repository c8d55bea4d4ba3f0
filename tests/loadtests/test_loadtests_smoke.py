"""Smoke tests: the load-test and benchmark scripts run end to end on the tiniest setting.

They check that the scripts work, never how fast anything is (that is `make bench`'s job).
Every server is started on free loopback ports by the scripts themselves and stopped by them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from loadtests.loadtest import parse_mix
from tests.helpers import ROOT


def run(*argv: str, timeout: float) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"{argv[0]} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done


def test_payloads_match_the_model(digits_repo: Path, tmp_path: Path) -> None:
    run(
        "loadtests.payloads",
        "--models",
        str(digits_repo),
        "--model",
        "digits",
        "--out",
        str(tmp_path),
        "--count",
        "5",
        timeout=60,
    )
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    meta = json.loads((digits_repo / "digits" / "1" / "metadata.json").read_text())["input"]
    pixels = np.load(tmp_path / "pixels.npy")
    assert pixels.shape == (5, meta["height"], meta["width"], meta["channels"])
    assert pixels.dtype == np.uint8
    assert len(manifest["files"]) == 5
    assert all((tmp_path / f).stat().st_size > 0 for f in manifest["files"])


def test_loadtest_runs_locust_and_summarises(digits_repo: Path, tmp_path: Path) -> None:
    done = run(
        "loadtests.loadtest",
        "--models",
        str(digits_repo),
        "--model",
        "digits",
        "--users",
        "4",
        "--spawn-rate",
        "4",
        "--run-time",
        "8s",
        "--results",
        str(tmp_path),
        timeout=120,
    )
    line = next(x for x in done.stdout.splitlines() if x.startswith("loadtest: ") and "req/s" in x)
    assert " 0 failures" in line, line
    (out,) = tmp_path.glob("*-loadtest")
    assert (out / "locust_stats.csv").is_file()
    assert (out / "report.html").is_file()
    names = (out / "locust_stats.csv").read_text()
    for request in ("/classify", "/v2/models", "UINT8 raw tensor", "BYTES encoded image"):
        assert request in names, f"{request} never ran"


TINY_TARGETS = """target = [
  { id = "tiny-grpc", model = "digits", protocol = "grpc", concurrency = 2, metric = "rps", compare = ">=", limit = 1, judge = "median", what = "grpc req/s at c=2" },
  { id = "tiny-memory", model = "*", protocol = "grpc", concurrency = 2, metric = "peak_pss_mb", compare = "<=", limit = 100000, judge = "max", what = "peak PSS at c=2" },
  { id = "other-model", model = "mobilenetv2", protocol = "grpc", concurrency = 2, metric = "rps", compare = ">=", limit = 1, judge = "median", what = "judged on another model only" },
]
"""


def tiny_bench(models: Path, tmp_path: Path, *extra: str) -> dict:
    """``loadtests.bench`` on the tiniest setting; returns its bench.json."""
    table = tmp_path / "targets.toml"
    table.write_text(TINY_TARGETS)
    run("loadtests.bench", "--model", "digits", "--models", str(models), "--concurrency", "2",
        "--duration", "1", "--warmup", "0.3", "--batch-sizes", "1,4", "--raw-seconds", "0.3",
        "--probe-seconds", "0.2", "--rest-s", "0", "--repeat-targets", "1", "--targets",
        str(table), "--out", str(tmp_path), "--docs", str(tmp_path / "docs"), *extra,
        timeout=300)  # fmt: skip
    (result,) = tmp_path.glob("*-digits/bench.json")
    return json.loads(result.read_text())


def test_bench_tiny_setting_writes_json_and_docs(digits_repo: Path, tmp_path: Path) -> None:
    bench = tiny_bench(digits_repo, tmp_path, "--peers", "", "--protocols", "grpc,http")
    assert bench["raw"]["best_images_per_s"] > 0
    assert {p["batch"] for p in bench["raw"]["points"]} == {1, 4}
    assert all(len(p["images_per_s_slices"]) == 3 for p in bench["raw"]["points"])
    visor = bench["servers"]["visor"]
    assert visor["cold_start_s"] > 0 and visor["memory_at_rest"]["pss_mb"] > 0
    # the sweep (repeat 0) over both protocols, then one repeat of the table's point (grpc c=2)
    assert [(p["target"], p["concurrency"], p["repeat"]) for p in visor["points"]] == [
        ("grpc", 2, 0), ("http", 2, 0), ("grpc", 2, 1)
    ]  # fmt: skip
    cores = (os.cpu_count() or 1) + 0.5
    for p in visor["points"]:
        assert p["requests"] > 0 and p["errors"] == 0, p
        assert p["raw_paired"]["best_images_per_s"] > 0 and p["ratio_to_raw"] > 0
        assert p["added_p50_ms"] == pytest.approx(p["p50_ms"] - p["raw_paired"]["batch1_p50_ms"])
        assert 0 <= p["machine_idle_cores"] <= cores and p["peak_pss_mb"] > 0
    # the verdicts come from the table given, only its rows for this model
    targets = {t["id"]: t for t in bench["targets"]}
    assert set(targets) == {"tiny-grpc", "tiny-memory"}
    rps = [p["rps"] for p in visor["points"] if p["target"] == "grpc"]
    assert targets["tiny-grpc"]["windows"]["visor"] == rps
    assert targets["tiny-grpc"]["measured"] == pytest.approx(sum(rps) / 2)  # median of two
    assert targets["tiny-grpc"]["met"] is (targets["tiny-grpc"]["measured"] >= 1)
    assert targets["tiny-memory"]["measured"] == max(
        p["peak_pss_mb"] for p in visor["points"] if p["target"] == "grpc"
    )
    docs = tmp_path / "docs"
    stored = json.loads((docs / "benchmarks.json").read_text())["runs"]["digits"]
    assert stored["stamp"] == bench["stamp"] and stored["targets"] == bench["targets"]
    assert "<!-- bench:digits:begin -->" in (docs / "benchmarks.md").read_text()
    assert (docs / "benchmarks.png").stat().st_size > 0


def test_a_peer_without_its_venv_is_reported_not_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from loadtests import peers

    monkeypatch.setattr(peers, "VENVS", tmp_path)
    assert "not installed" in peers.missing("kserve")
    assert peers.missing("nope").startswith("unknown peer")
    (tmp_path / "kserve").mkdir()
    (tmp_path / "kserve" / ".peer-installed-0123").touch()
    assert peers.missing("kserve") is None


@pytest.mark.skipif(
    any(__import__("loadtests.peers").peers.missing(n) for n in ("kserve", "pytriton")),
    reason="peer venvs absent (build/peers/kserve, build/peers/pytriton): run `make peers`",
)
def test_bench_measures_the_peers_on_the_same_windows(digits_repo: Path, tmp_path: Path) -> None:
    bench = tiny_bench(digits_repo, tmp_path, "--protocols", "grpc,rest-v2")
    for name in ("visor", "kserve", "pytriton"):
        points = bench["servers"][name]["points"]
        assert {(p["target"], p["repeat"]) for p in points} >= {("grpc", 0), ("rest-v2", 0)}
        assert all(p["requests"] > 0 and p["errors"] == 0 for p in points), (name, points)
        assert bench["servers"][name]["memory_peak_under_load"]["pss_mb"] > 0
    grpc = next(t for t in bench["targets"] if t["id"] == "tiny-grpc")
    assert set(grpc["by_server"]) == {"visor", "kserve", "pytriton"}
    assert all(v is not None for v in grpc["by_server"].values())


def test_ab_alternates_variants_and_reports_medians(digits_repo: Path, tmp_path: Path) -> None:
    done = run(
        "loadtests.experiments.ab",
        "--model",
        "digits",
        "--models",
        str(digits_repo),
        "--variant",
        "base:",
        "--variant",
        "one-thread:VISOR_INTRA_OP_THREADS=1,VISOR_INFERENCE_THREADS=1",
        "--tree",
        f"one-thread={ROOT}",
        "--point",
        "grpc:2",
        "--point",
        "http:1",
        "--reps",
        "2",
        "--duration",
        "0.5",
        "--warmup",
        "0.2",
        "--out",
        str(tmp_path),
        timeout=150,
    )
    (result,) = tmp_path.glob("*-ab-digits/ab.json")
    report = json.loads(result.read_text())
    assert report["variants"]["one-thread"] == {
        "VISOR_INTRA_OP_THREADS": "1",
        "VISOR_INFERENCE_THREADS": "1",
    }
    cells = {(r["variant"], r["target"], r["concurrency"]): r for r in report["results"]}
    assert set(cells) == {
        (v, t, c) for v in ("base", "one-thread") for t, c in (("grpc", 2), ("http", 1))
    }
    assert all(len(r["rps_windows"]) == 2 and r["rps"] > 0 for r in cells.values())
    # the event loop's CPU per request: measured, and far below a whole window per request
    assert all(0 < r["loop_ms_per_request"] < 1000 / r["rps"] * 2 for r in cells.values())
    assert all(r["machine_idle_cores"] >= 0 for r in cells.values())
    assert report["trees"] == {"one-thread": str(ROOT)}
    assert "errors 0" in done.stdout and not re.search(r"errors [1-9]", done.stdout)
    assert f"from {ROOT}" in done.stdout


def test_ab_refuses_a_tree_that_is_not_a_checkout(tmp_path: Path) -> None:
    from loadtests.experiments.ab import parse_tree

    assert parse_tree(f"old={ROOT}") == ("old", ROOT.resolve())
    for bad in (f"old={tmp_path}", str(ROOT), f"={ROOT}"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_tree(bad)


@pytest.mark.parametrize("bad", ["noname", ":X=1", "a:X", "a:1X=2"])
def test_ab_refuses_malformed_variants(bad: str) -> None:
    from loadtests.experiments.ab import parse_variant

    with pytest.raises(argparse.ArgumentTypeError):
        parse_variant(bad)


def test_mix_parsing() -> None:
    assert parse_mix("classify=2,grpc_raw=1") == {
        "classify": 2,
        "v2_infer": 0,
        "grpc_raw": 1,
        "grpc_bytes": 0,
    }
    for bad in ("classify=x", "nope=1", "classify=0,grpc_raw=0"):
        with pytest.raises(ValueError):
            parse_mix(bad)


def test_grpc_stream_client_matches_answers_and_counts_refusals(
    digits_repo: Path, tmp_path: Path
) -> None:
    import asyncio

    from loadtests.client import LoadSpec, run_load
    from loadtests.procs import start_visor

    payloads = tmp_path / "payloads"
    run("loadtests.payloads", "--models", str(digits_repo), "--model", "digits", "--out",
        str(payloads), "--count", "5", timeout=60)  # fmt: skip
    with start_visor(digits_repo, "digits", tmp_path / "visor.log", protocol="grpc") as server:

        def load(model: str):
            spec = LoadSpec("grpc-stream", "127.0.0.1", server.grpc_port, model, payloads, 3, 1.0)
            return asyncio.run(run_load(spec))

        good, refused = load("digits"), load("no-such-model")
    # NOTE: three workers share one stream; an answer whose id matched no request would leave
    # its request waiting, so nothing would count.
    assert good.requests > 0 and good.errors == 0 and good.client_cpu_s > 0
    assert refused.requests == 0 and refused.errors > 0
    assert "NOT_FOUND" in refused.error_sample and "no-such-model" in refused.error_sample


def test_bench_judges_the_table_on_the_median_of_paired_windows() -> None:
    from loadtests.bench import derive

    def pt(c: int, images: float, p50: float, raw: float, b1: float, rep: int) -> dict:
        paired = {"best_images_per_s": raw, "batch1_p50_ms": b1}
        return {"target": "grpc", "concurrency": c, "images_per_s": images, "rps": images,
                "p50_ms": p50, "server_peak": {"pss_mb": 500 + rep}, "raw_paired": paired,
                "repeat": rep}  # fmt: skip

    table = [
        {"id": "ratio", "protocol": "grpc", "concurrency": 32, "metric": "ratio_to_raw",
         "compare": ">=", "limit": 0.85, "judge": "median"},
        {"id": "lone", "protocol": "grpc", "concurrency": 1, "metric": "added_p50_ms",
         "compare": "<=", "limit": 1.0, "judge": "median"},
        {"id": "memory", "protocol": "grpc", "concurrency": 32, "metric": "peak_pss_mb",
         "compare": "<=", "limit": 501, "judge": "max"},
        {"id": "cold", "protocol": "", "concurrency": 0, "metric": "cold_start_s",
         "compare": "<=", "limit": 10.0, "judge": "once"},
    ]  # fmt: skip
    # the sweep's windows are unlucky; two of three repeats are not
    visor = {"cold_start_s": 3.0, "points": [
        pt(1, 100, 7.0, 200, 5.0, 0), pt(32, 150, 200, 200, 5.0, 0),
        pt(1, 100, 5.5, 200, 5.0, 1), pt(32, 180, 200, 200, 5.0, 1),
        pt(1, 100, 6.0, 200, 5.0, 2), pt(32, 176, 200, 200, 5.0, 2),
    ]}  # fmt: skip
    peer = {"cold_start_s": 12.0, "points": [pt(1, 100, 9.0, 200, 5.0, 0)]}
    raw = {"best_images_per_s": 200.0, "batch1_p50_ms": 5.0, "points": []}
    bench = {"raw": raw, "servers": {"visor": visor, "kserve": peer, "pytriton": {"skipped": "x"}}}
    derive(bench, table)
    t = {row["id"]: row for row in bench["targets"]}
    assert t["ratio"]["windows"]["visor"] == pytest.approx([0.75, 0.9, 0.88])
    assert t["ratio"]["measured"] == pytest.approx(0.88) and t["ratio"]["met"] is True
    assert t["lone"]["measured"] == pytest.approx(1.0) and t["lone"]["met"] is True
    assert t["memory"]["measured"] == 502 and t["memory"]["met"] is False  # the worst window
    assert t["cold"]["measured"] == 3.0 and t["cold"]["met"] is True
    # the peers are measured on the same rows, never judged; a skipped peer has no figure
    assert t["lone"]["by_server"] == {"visor": 1.0, "kserve": 4.0, "pytriton": None}
    assert t["cold"]["by_server"]["kserve"] == 12.0 and t["ratio"]["by_server"]["kserve"] is None
