"""Alert rules and the Grafana dashboard only reference metrics that leadbot actually exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client import REGISTRY

import leadbot.metrics  # noqa: F401  (registers the metrics)

ROOT = Path(__file__).resolve().parents[2]
NAME = re.compile(r"\bleadbot_[a-z_]+")


def exported_names() -> set[str]:
    # Every series name a collector can produce (counters' `_total`, histograms' `_bucket`/`_sum`/`_count`),
    # including labelled metrics that have no samples yet.
    return {name for name in REGISTRY._names_to_collectors if name.startswith("leadbot_")}


def test_alert_rules_reference_exported_metrics_and_runbook_sections():
    rules = yaml.safe_load((ROOT / "monitoring/alerts.yml").read_text())["groups"][0]["rules"]
    runbook = (ROOT / "docs/runbook.md").read_text()
    headings = re.findall(r"^## (.+)$", runbook, re.M)
    anchors = {re.sub(r"[^a-z0-9 -]", "", heading.lower()).strip().replace(" ", "-") for heading in headings}
    for rule in rules:
        assert set(NAME.findall(rule["expr"])) <= exported_names(), rule["alert"]
        assert rule["annotations"]["runbook"].split("#")[1] in anchors, rule["alert"]


def test_dashboard_panels_reference_exported_metrics():
    dashboard = json.loads((ROOT / "monitoring/grafana-dashboard.json").read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = {name for expr in expressions for name in NAME.findall(expr)}
    assert used and used <= exported_names()
