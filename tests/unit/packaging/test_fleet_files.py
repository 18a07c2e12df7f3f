"""The committed fleet files only name metrics the miner exports; the launcher validates.

The alert rules have their own tests (test_prometheus_rules.py)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from r3mes_desktop.api.metrics import MinerMetrics
from r3mes_desktop.core.events import EventBus, RetryScheduled, TransactionStateChanged

ROOT = Path(__file__).resolve().parents[3]
METRIC = re.compile(r"\br3mes_[a-z_]+")


def _exported() -> set[str]:
    bus = EventBus()
    metrics = MinerMetrics(bus)
    bus.publish(
        RetryScheduled(
            operation="o", service="s", attempt=1, delay=1.0, category="network", message="m"
        )
    )
    bus.publish(
        TransactionStateChanged(transaction_id="t", round_id=1, old_state=None, new_state="pending")
    )
    bus.publish(
        TransactionStateChanged(
            transaction_id="t", round_id=1, old_state="pending", new_state="committed"
        )
    )
    bus.publish(
        TransactionStateChanged(
            transaction_id="u",
            round_id=2,
            old_state="training",
            new_state="failed",
            error_category="resource",
            failed_step="training",
        )
    )
    metrics.set_snapshot(
        stats={"error_breakdown": {"network_errors": 1}}, breakers={"chain": {"state": "closed"}}
    )
    names: set[str] = set()
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        names |= {s.name for s in family.samples}
    return names


def test_dashboard_queries_use_exported_metrics() -> None:
    dashboard = json.loads((ROOT / "packaging" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in METRIC.findall(e)}
    assert used, "the dashboard queries no r3mes metric"
    assert used <= _exported(), used - _exported()
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


@pytest.mark.skipif(
    shutil.which("desktop-file-validate") is None,
    reason="desktop-file-validate not installed (apt-get install desktop-file-utils)",
)
def test_desktop_file_validates() -> None:
    result = subprocess.run(
        ["desktop-file-validate", str(ROOT / "resources" / "r3mes-desktop.desktop")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_icons_exist_in_every_size() -> None:
    icons = ROOT / "resources" / "icons"
    assert (icons / "r3mes-desktop.svg").read_text().lstrip().startswith("<?xml")
    for size in (16, 24, 32, 48, 64, 128, 256, 512):
        png = icons / "hicolor" / f"{size}x{size}" / "apps" / "r3mes-desktop.png"
        head = png.read_bytes()[:24]
        assert head[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
        assert (width, height) == (size, size)
