"""The soak and overload benchmarks' arithmetic and reports (the runs take minutes: not here)."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from loadtests.overload import outcome, summarise
from loadtests.report import update_block
from loadtests.soak import fit_slope


def test_slope_ignores_the_warm_up_and_is_in_mb_per_minute() -> None:
    # 100 MB of warm-up growth in the first minute, then 0.5 MB per minute
    samples = [[t, 100.0 * min(t, 60) / 60 + 0.5 * max(0, t - 60) / 60] for t in range(0, 361, 2)]
    fit = fit_slope(samples, warmup_s=60)
    assert fit["mb_per_min"] == pytest.approx(0.5, abs=1e-6)
    assert fit["rss_start_mb"] == pytest.approx(100.0)


def test_too_few_samples_give_no_slope() -> None:
    assert fit_slope([[0, 1.0], [70, 2.0]], warmup_s=60)["mb_per_min"] is None


def test_docs_block_is_replaced_not_duplicated(tmp_path: Path) -> None:
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n\nkept\n")
    update_block(docs, "soak", "first", "## Soak")
    update_block(docs, "soak", "second", "## Soak")
    text = docs.read_text()
    assert "kept" in text and "second" in text and "first" not in text
    assert text.count("<!-- soak:begin -->") == 1


class _Refused(grpc.RpcError):
    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.RESOURCE_EXHAUSTED


def test_outcomes_sort_refusals_from_errors() -> None:
    assert outcome(None) == "served"
    assert outcome(_Refused()) == "refused"
    assert outcome(RuntimeError("HTTP 503: queue full")) == "refused"
    assert outcome(RuntimeError("HTTP 500: bug")) == "error"
    summary = summarise({"served": [1.0, 3.0], "refused": [], "error": []}, seconds=2.0)
    assert summary["served"]["per_s"] == 1.0 and summary["refused"]["count"] == 0


def test_server_side_p99_bound_from_bentoml_histogram() -> None:
    from loadtests.overload import server_p99_bound_ms

    name = "bentoml_service_request_duration_seconds"
    lines = [f"# TYPE {name} histogram"]
    for le, count in (("0.005", 98), ("0.01", 99), ("0.025", 100), ("+Inf", 100)):
        lines.append(f'{name}_bucket{{http_response_code="503",le="{le}"}} {count}')
        lines.append(f'{name}_bucket{{http_response_code="200",le="{le}"}} 0')
    lines += [
        f'{name}_count{{http_response_code="503"}} 100',
        f'{name}_sum{{http_response_code="503"}} 0.3',
    ]
    assert server_p99_bound_ms("\n".join(lines) + "\n") == 10.0
    assert server_p99_bound_ms("\n".join(lines) + "\n", status="504") is None
