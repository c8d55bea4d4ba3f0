"""deploy/prometheus (alert rules) and deploy/grafana (dashboard): promtool checks the rules,
runs their unit tests and parses every dashboard query; a JSON schema checks the dashboard."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import yaml
from prometheus_client import CollectorRegistry
from scipy.stats import binomtest

from service.metrics import Metrics
from service.monitoring import stats
from tests.helpers import ROOT

RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULES_TEST = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "visor.json"
SCHEMA = Path(__file__).with_name("grafana_dashboard.schema.json")
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not found: install Debian's `prometheus` package"
)


def _promtool(*args: str) -> subprocess.CompletedProcess:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], capture_output=True, text=True, timeout=60, check=False
    )


def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _exprs(dashboard: dict) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def _known_series() -> set[str]:
    """Sample names the engine exports (a fresh registry), and BentoML's HTTP histogram."""
    registry = CollectorRegistry()
    Metrics(registry)
    names = {m.name for m in registry.collect()}
    suffixes = ("", "_total", "_bucket", "_sum", "_count", "_created")
    return {n + s for n in names for s in suffixes}


RULE_FILES = [
    (RULES.with_name(f"{name}.yml"), RULES.with_name(f"{name}_test.yml"))
    for name in ("alerts", "fleet", "rollouts")
]


@needs_promtool
@pytest.mark.parametrize(("rules", "unit_test"), RULE_FILES, ids=["alerts", "fleet", "rollouts"])
def test_rules_are_valid_and_their_unit_tests_pass(rules: Path, unit_test: Path) -> None:
    checked = _promtool("check", "rules", str(rules))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = _promtool("test", "rules", str(unit_test))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


@pytest.mark.parametrize(("rules", "_unit_test"), RULE_FILES, ids=["alerts", "fleet", "rollouts"])
def test_rules_name_only_series_visor_exports_or_records(rules: Path, _unit_test: Path) -> None:
    groups = yaml.safe_load(rules.read_text())["groups"]
    exprs = [r["expr"] for g in groups for r in g["rules"]]
    used = {n for e in exprs for n in re.findall(r"\bvisor_[a-z_]+", e)}
    assert used and used <= _known_series(), used - _known_series()
    recorded = {r["record"] for g in groups for r in g["rules"] if "record" in r}
    named = {n for e in exprs for n in re.findall(r"\bvisor:[a-z_0-9:]+", e)}
    assert named <= recorded, named - recorded


def test_dashboard_matches_the_schema_and_its_layout_fits() -> None:
    dashboard = _dashboard()
    jsonschema.validate(dashboard, json.loads(SCHEMA.read_text()))
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels), "panel ids must be unique"
    for p in panels:
        pos = p["gridPos"]
        assert pos["x"] + pos["w"] <= 24, f"panel {p['title']!r} is wider than the grid"
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    for p in panels:
        if "datasource" in p:
            assert p["datasource"]["uid"] == "${datasource}", p["title"]
    for expr in _exprs(dashboard):
        used = set(re.findall(r"\$\{?([A-Za-z_]\w*)", expr)) - {"__rate_interval"}
        assert used <= variables, f"{expr}: undefined variables {used - variables}"
    titles = " ".join(p["title"].lower() for p in panels)
    for topic in ("requests", "latency", "queue", "precision", "recall", "stability"):
        assert topic in titles


def test_dashboard_queries_name_only_exported_series() -> None:
    used = {n for e in _exprs(_dashboard()) for n in re.findall(r"\bvisor_[a-z_]+", e)}
    assert used and used <= _known_series(), used - _known_series()


@needs_promtool
def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    # NOTE: promtool parses PromQL only inside rule files: each query becomes a recording rule,
    # with Grafana's variables replaced by values a real dashboard would send.
    def concrete(expr: str) -> str:
        expr = expr.replace("$__rate_interval", "5m")
        return re.sub(r"\$\{?[A-Za-z_]\w*\}?", ".*", expr)

    exprs = _exprs(_dashboard())
    rules = [
        {"record": f"visor:dashboard_query_{i}", "expr": concrete(e)} for i, e in enumerate(exprs)
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = _promtool("check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in checked.stdout


# --- fleet recording rules (deploy/prometheus/fleet.yml) -------------------------------------

FLEET_RULES = RULE_FILES[1][0]
CLASSES = ("cat", "dog", "fox")


def _counter(rng: np.random.Generator) -> tuple[list[int], int]:
    """25 hourly samples of one replica's counter that restarts once (a new pod, back to
    0), and the increase over them that Prometheus must find."""
    steps = rng.integers(0, 40, 24)
    restart = int(rng.integers(1, 24))
    values, increase = [int(rng.integers(100, 500))], 0
    value = values[0]
    for i, step in enumerate(steps.tolist(), 1):
        value = step if i == restart else value + step
        increase += step
        values.append(value)
    return values, increase


def _fleet_case(seed: int) -> tuple[dict, dict[str, dict[str, float]]]:
    """Random counters of two replicas, and what each record must hold, computed here."""
    rng = np.random.default_rng(seed)
    series, totals = [], {}
    for outcome in ("tp", "fp", "fn"):
        for label in CLASSES:
            totals[label, outcome] = 0
            for pod in ("a", "b"):
                values, increase = _counter(rng)
                totals[label, outcome] += increase
                series.append(
                    {
                        "series": f'visor_live_outcomes_total{{model="m",version="1",'
                        f'label="{label}",outcome="{outcome}",pod="{pod}"}}',
                        "values": " ".join(map(str, values)),
                    }
                )
    served, reference = np.zeros(len(CLASSES)), rng.dirichlet(np.ones(len(CLASSES)))
    for i, label in enumerate(CLASSES):
        for pod in ("a", "b"):
            # drift's window is the last hour: the two last samples
            start, step = int(rng.integers(0, 900)), int(rng.integers(0, 60))
            step = 0 if seed % 2 == 0 and i == 0 else step  # an empty bucket: the floor counts
            served[i] += step
            series += [
                {
                    "series": f'visor_drift_served_total{{model="m",version="1",kind="label",'
                    f'bucket="{label}",pod="{pod}"}}',
                    "values": f"{start}x23 {start + step}",
                },
                {
                    "series": f'visor_drift_reference{{model="m",version="1",kind="label",'
                    f'bucket="{label}",pod="{pod}"}}',
                    "values": f"{float(reference[i])!r}x24",
                },
            ]
    want: dict[str, dict[str, float]] = {}
    for metric, other in (("precision", "fp"), ("recall", "fn")):
        for label in CLASSES:
            tp, n = totals[label, "tp"], totals[label, "tp"] + totals[label, other]
            ci = binomtest(tp, n).proportion_ci(confidence_level=0.90, method="wilson")
            for record, value in (
                (f"visor:live_{metric}:1d", tp / n),
                (f"visor:live_{metric}_support:1d", n),
                (f"visor:live_{metric}_lower_bound:1d", ci.low),
                (f"visor:live_{metric}_upper_bound:1d", ci.high),
            ):
                want.setdefault(record, {})[f'label="{label}",model="m",version="1"'] = value
    psi = stats.psi(reference, served) if served.sum() else float("nan")
    want["visor:drift_psi:1h"] = {'kind="label",model="m",version="1"': psi}
    return {"interval": "1h", "input_series": series}, want


@needs_promtool
@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_fleet_records_sum_replicas_through_restarts(tmp_path: Path, seed: int) -> None:
    case, want = _fleet_case(seed)
    tests = []
    for record, samples in want.items():
        for labels, value in samples.items():
            if np.isnan(value):
                continue
            selector = "{" + labels + "}"
            tests.append(
                {
                    "expr": f"abs({record}{selector} - {float(value)!r}) < bool 1e-9",
                    "eval_time": "24h",
                    "exp_samples": [{"labels": selector, "value": 1}],
                }
            )
    spec = {
        "rule_files": [str(FLEET_RULES)],
        "evaluation_interval": "1h",
        "tests": [{**case, "promql_expr_test": tests}],
    }
    path = tmp_path / "fleet_test.yml"
    path.write_text(yaml.safe_dump(spec))
    tested = _promtool("test", "rules", str(path))
    assert tested.returncode == 0, tested.stdout + tested.stderr
