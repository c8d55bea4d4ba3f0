"""Smoke tests: the load-test and benchmark scripts run end to end on the tiniest setting.

They check that the scripts work, never how fast anything is (that is `make bench`'s job).
Every server is started on free loopback ports by the scripts themselves and stopped by them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from loadtests.loadtest import parse_mix
from loadtests.profile import parse_collapsed, summarise

ROOT = Path(__file__).resolve().parents[2]


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
        "3s",
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


def test_bench_tiny_setting_writes_json_and_docs(digits_repo: Path, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    run(
        "loadtests.bench",
        "--model",
        "digits",
        "--models",
        str(digits_repo),
        "--concurrency",
        "2",
        "--duration",
        "1",
        "--warmup",
        "0.3",
        "--batch-sizes",
        "1,4",
        "--raw-seconds",
        "0.3",
        "--probe-seconds",
        "0.2",
        "--rest-s",
        "0",
        "--repeat-targets",
        "1",
        "--repeat-concurrency",
        "2",
        "--out",
        str(tmp_path),
        "--docs",
        str(docs),
        timeout=180,
    )
    (result,) = tmp_path.glob("*-digits/bench.json")
    bench = json.loads(result.read_text())
    assert bench["raw"]["best_images_per_s"] > 0
    assert {p["batch"] for p in bench["raw"]["points"]} == {1, 4}
    rounds = bench["raw"]["rounds"]
    assert rounds == 3 and all(len(p["images_per_s_slices"]) == 3 for p in bench["raw"]["points"])
    # NOTE: for digits the default protocols add ModelStreamInfer (answers matched by id).
    for server, targets in (("visor", {"grpc", "grpc-stream", "http"}), ("naive", {"naive"})):
        points = bench[server]["points"]
        assert {p["target"] for p in points} == targets
        assert all(p["requests"] > 0 and p["errors"] == 0 for p in points), points
        assert all(p["raw_paired"]["best_images_per_s"] > 0 for p in points)
        # the whole machine's unused and stolen cores over each window: read, and within its cores
        cores = (os.cpu_count() or 1) + 0.5
        assert all(0 <= p["machine_idle_cores"] <= cores for p in points), points
        assert all(0 <= p["machine_steal_cores"] <= cores for p in points), points
        assert bench[server]["cold_start_s"] > 0
        assert bench[server]["memory_at_rest"]["rss_mb"] > 0
    assert all(t["met"] is not None for t in bench["targets"])
    # one repeat of c=2 per protocol, after the sweep, with its own raw probes; naive none
    repeats = bench["visor"]["repeats"]
    assert [(p["target"], p["concurrency"], p["repeat"]) for p in repeats] == [
        (t, 2, 1) for t in ("grpc", "grpc-stream", "http")
    ]
    assert all(p["errors"] == 0 and p["raw_paired"]["best_images_per_s"] > 0 for p in repeats)
    assert bench["naive"]["repeats"] == []
    medians = [t["target"] for t in bench["targets"] if "median of 2 windows" in t["target"]]
    assert medians == [
        "grpc requests/s at c=2, median of 2 windows",
        "grpc-stream requests/s at c=2, median of 2 windows",
    ]
    text = (docs / "benchmarks.md").read_text()
    assert "**Repeated target points**" in text and "- grpc c=2: req/s " in text
    assert "<!-- bench:digits:begin -->" in text and "| visor | grpc | 2 |" in text
    assert "| visor | grpc-stream | 2 |" in text
    assert (docs / "benchmarks.png").stat().st_size > 0
    assert (
        json.loads((docs / "benchmarks.json").read_text())["runs"]["digits"]["stamp"]
        == bench["stamp"]
    )


def test_ab_alternates_variants_and_reports_medians(digits_repo: Path, tmp_path: Path) -> None:
    done = run(
        "loadtests.ab",
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
    assert "errors" not in done.stdout
    assert f"from {ROOT}" in done.stdout


def test_ab_refuses_a_tree_that_is_not_a_checkout(tmp_path: Path) -> None:
    from loadtests.ab import parse_tree

    assert parse_tree(f"old={ROOT}") == ("old", ROOT.resolve())
    for bad in (f"old={tmp_path}", str(ROOT), f"={ROOT}"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_tree(bad)


@pytest.mark.parametrize("bad", ["noname", ":X=1", "a:X", "a:1X=2"])
def test_ab_refuses_malformed_variants(bad: str) -> None:
    from loadtests.ab import parse_variant

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


def test_profile_summary_sorts_samples_by_category(tmp_path: Path) -> None:
    raw = tmp_path / "stacks.txt"
    root = ROOT
    raw.write_text(
        f'process 1:"python -m service";thread (0x1);<module> ({root}/service/__main__.py:1);'
        f"OnnxBackend.run ({root}/service/backends/onnx.py:70);"
        "Session.run (/v/lib/python3.11/site-packages/onnxruntime/capi/x.py:395) 30\n"
        f'process 1:"python -m service";thread (0x1);<module> ({root}/service/__main__.py:1);'
        f"decode_image ({root}/service/codecs.py:40);"
        "open (/v/lib/python3.11/site-packages/PIL/Image.py:3300) 10\n"
    )
    summary = summarise(parse_collapsed(raw))
    assert summary["samples"] == 40
    assert dict(summary["self_by_category_pct"]) == {
        "model compute (onnxruntime session.run)": 75.0,
        "image decode/resize (Pillow)": 25.0,
    }
    assert ("OnnxBackend.run (service/backends/onnx.py)", 75.0) in summary["visor_inclusive_pct"]


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


def test_floor_server_answers_like_visor_without_a_model(digits_repo: Path, tmp_path: Path) -> None:
    import asyncio
    import time

    import tritonclient.grpc as triton

    from loadtests.client import LoadSpec, run_load
    from loadtests.procs import LOOPBACK, free_port, grpc_model_ready

    payloads = tmp_path / "payloads"
    run("loadtests.payloads", "--models", str(digits_repo), "--model", "digits", "--out",
        str(payloads), "--count", "5", timeout=60)  # fmt: skip
    port = free_port()
    argv = [sys.executable, "-m", "loadtests.floor_server", "--port", str(port), "--via-pool"]
    with subprocess.Popen(argv, cwd=ROOT) as proc:
        try:
            deadline = time.monotonic() + 30
            while not grpc_model_ready(port, "digits"):
                assert proc.poll() is None and time.monotonic() < deadline, "floor_server died"
                time.sleep(0.2)
            result = asyncio.run(
                run_load(LoadSpec("grpc", LOOPBACK, port, "digits", payloads, 3, 1.0))
            )
            client = triton.InferenceServerClient(f"{LOOPBACK}:{port}")
            pixels = np.load(payloads / "pixels.npy")[:1]
            inp = triton.InferInput("image", list(pixels.shape), "UINT8")
            inp.set_data_from_numpy(pixels)
            answer = client.infer("digits", [inp])
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    assert result.requests > 0 and result.errors == 0
    assert answer.as_numpy("probabilities").shape == (1, 10)
    assert answer.as_numpy("labels").shape == (1,)


def test_bench_judges_repeated_target_points_on_their_median() -> None:
    from loadtests.bench import derive

    def pt(target: str, c: int, images: float, p50: float, raw: float, b1: float) -> dict:
        return {
            "target": target,
            "concurrency": c,
            "images_per_s": images,
            "rps": images,
            "p50_ms": p50,
            "server_cpu_cores": 1.8,
            "raw_paired": {"best_images_per_s": raw, "batch1_p50_ms": b1},
        }

    raw = {"best_images_per_s": 200.0, "batch1_p50_ms": 5.0, "points": []}
    visor = {
        "cold_start_s": 3.0,
        "memory_at_rest": {"pss_mb": 300},
        "memory_peak_under_load": {"pss_mb": 400},
        # the sweep's windows are unlucky; two of three repeats are not
        "points": [pt("grpc", 1, 100, 9.0, 200, 5.0), pt("grpc", 32, 150, 200, 200, 5.0)],
        "repeats": [
            pt("grpc", 1, 100, 6.5, 200, 5.0),
            pt("grpc", 32, 180, 200, 200, 5.0),
            pt("grpc", 1, 100, 6.0, 200, 5.0),
            pt("grpc", 32, 176, 200, 200, 5.0),
        ],
    }
    bench = {"model": "m", "raw": raw, "visor": visor}
    derive(bench)
    by_name = {t["target"]: t for t in bench["targets"]}
    single = by_name["grpc throughput at c=32 / raw ORT probed around that point"]
    assert single["measured"] == pytest.approx(0.75) and single["met"] is False
    median = by_name["grpc throughput at c=32 / raw ORT probed around it, median of 3 windows"]
    assert median["measured"] == pytest.approx(0.88) and median["met"] is True
    latency = by_name["grpc added p50 latency at c=1 (vs the probes), median of 3 windows"]
    assert latency["measured"] == pytest.approx(1.5) and latency["met"] is True
