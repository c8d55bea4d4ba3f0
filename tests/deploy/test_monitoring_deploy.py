"""deploy/prometheus (alert rules) and deploy/grafana (dashboard): promtool checks the rules,
runs their unit tests and parses every dashboard query; a JSON schema checks the dashboard."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml
from prometheus_client import CollectorRegistry

from service.metrics import Metrics
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


@needs_promtool
def test_alert_rules_are_valid_and_their_unit_tests_pass() -> None:
    checked = _promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = _promtool("test", "rules", str(RULES_TEST))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_alert_rules_name_only_series_visor_exports() -> None:
    rules = yaml.safe_load(RULES.read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    used = {n for e in exprs for n in re.findall(r"\bvisor_[a-z_]+", e)}
    assert used and used <= _known_series(), used - _known_series()


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
