"""The Grafana dashboard as a document: read by its own tests and by the Prometheus tests,
which evaluate every panel's query."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

ROOT: Final = Path(__file__).resolve().parents[2]
GRAFANA: Final = ROOT / "infra" / "grafana"
DASHBOARD: Final = GRAFANA / "dashboards" / "binance-alerter-overview.json"


def dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return document


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def panel_exprs() -> list[str]:
    return [t["expr"] for p in panels() for t in p["targets"]]
