"""/metrics parses with prometheus_client's own parser and carries every promised series."""

from __future__ import annotations

import itertools
import math
import re
from pathlib import Path

from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from r3mes_desktop.api.metrics import RETRY_OPERATIONS, TX_STATES, MinerMetrics
from r3mes_desktop.core.errors import ErrorCategory
from r3mes_desktop.core.events import (
    EventBus,
    RetryScheduled,
    StepProgress,
    TransactionStateChanged,
)
from r3mes_desktop.core.txstate import STEPS
from r3mes_desktop.core.workproof import Reason
from tests.unit.api.conftest import Api


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _tx(tx: str, old: str | None, new: str, ts: float, **kw: object) -> TransactionStateChanged:
    return TransactionStateChanged(
        ts=ts,
        transaction_id=tx,
        round_id=1,
        old_state=old,
        new_state=new,
        **kw,  # type: ignore[arg-type]
    )


async def test_metrics_exposition_parses_with_all_series(api: Api) -> None:
    bus = api.bus
    bus.publish(_tx("a", None, "pending", 100.0))
    bus.publish(_tx("a", "pending", "training", 101.0))
    bus.publish(
        StepProgress(
            transaction_id="a", step="training", fraction=0.5, detail={"tokens_per_s": 812.5}
        )
    )
    bus.publish(
        StepProgress(transaction_id="a", step="pow", fraction=0.1, detail={"hash_rate": 250000.0})
    )
    bus.publish(
        RetryScheduled(
            operation="add_and_pin",
            service="ipfs",
            attempt=1,
            delay=1.0,
            category="network",
            message="reset",
        )
    )
    bus.publish(_tx("a", "task_complete", "committed", 142.0))
    bus.publish(_tx("b", None, "pending", 150.0))
    bus.publish(
        _tx(
            "b",
            "ipfs_upload",
            "compensating",
            151.0,
            failed_step="ipfs_upload",
            error_category="network",
        )
    )
    bus.publish(_tx("b", "compensating", "rolled_back", 152.0))
    api.breakers.get("chain").force_open()

    resp = await api.client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = _samples(await resp.text())

    assert samples[("r3mes_transactions", (("state", "committed"),))] == 3
    assert samples[("r3mes_transactions", (("state", "failed"),))] == 0
    assert samples[("r3mes_transactions", (("state", "fetch"),))] == 0  # listed, none now
    assert samples[("r3mes_errors_total", (("category", "network"),))] == 2
    assert samples[("r3mes_errors_total", (("category", "validation"),))] == 1
    assert samples[("r3mes_breaker_state", (("service", "chain"), ("state", "forced_open")))] == 1
    assert samples[("r3mes_breaker_state", (("service", "chain"), ("state", "closed")))] == 0
    assert samples[("r3mes_breaker_state", (("service", "ipfs"), ("state", "closed")))] == 1
    assert ("r3mes_breaker_rejections_total", (("service", "ipfs"),)) in samples
    retry_key = (
        "r3mes_retries_total",
        (("category", "network"), ("operation", "add_and_pin"), ("service", "ipfs")),
    )
    assert samples[retry_key] == 1
    assert samples[("r3mes_commit_latency_seconds_count", ())] == 1
    assert samples[("r3mes_commit_latency_seconds_sum", ())] == 42.0
    assert samples[("r3mes_commit_latency_seconds_bucket", (("le", "60.0"),))] == 1
    assert samples[("r3mes_commit_latency_seconds_bucket", (("le", "30.0"),))] == 0
    assert samples[("r3mes_training_tokens_per_second", ())] == 812.5
    assert samples[("r3mes_pow_hash_rate", ())] == 250000.0
    failures = (
        "r3mes_transaction_failures_total",
        (("category", "network"), ("step", "ipfs_upload")),
    )
    assert samples[failures] == 1  # compensating -> rolled_back is the same failure
    assert samples[("r3mes_transitions_total", (("state", "committed"),))] == 1


def test_each_metrics_object_has_its_own_registry() -> None:
    first, second = MinerMetrics(), MinerMetrics()
    first.tokens_per_s.set(5)
    assert b"r3mes_training_tokens_per_second 5.0" in first.exposition()
    assert b"r3mes_training_tokens_per_second 0.0" in second.exposition()


def test_seeds_style_totals_are_understood() -> None:
    metrics = MinerMetrics()
    stats = {  # core/stats.py's keys: failed includes rolled back and compensating
        "committed_transactions": 7,
        "failed_transactions": 5,
        "rolled_back_transactions": 2,
        "compensating_transactions": 1,
        "active_transactions": 1,
    }
    metrics.set_snapshot(stats=stats, breakers={})
    samples = _samples(metrics.exposition().decode())
    by_state = {k[1][0][1]: v for k, v in samples.items() if k[0] == "r3mes_transactions"}
    assert by_state == {
        "committed": 7,
        "failed": 2,
        "rolled_back": 2,
        "compensating": 1,
        "active": 1,
    }


def _scrape(metrics: MinerMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return _samples(metrics.exposition().decode())


def _increase(values: list[float | None]) -> float | None:
    """Prometheus' `increase()` over scraped values (without its edge extrapolation): no
    result from fewer than two samples of the series, a drop counts as a counter reset."""
    present = [v for v in values if v is not None]
    if len(present) < 2:
        return None
    total = 0.0
    for before, after in itertools.pairwise(present):
        total += after - before if after >= before else after
    return total


def test_a_fresh_process_exposes_every_known_label_combination_at_zero() -> None:
    samples = _scrape(MinerMetrics())

    for state in TX_STATES:
        assert samples[("r3mes_transitions_total", (("state", state),))] == 0
    for category in ErrorCategory:
        for step in (*(s.value for s in STEPS), "unknown"):
            key = (
                "r3mes_transaction_failures_total",
                (("category", category.value), ("step", step)),
            )
            assert samples[key] == 0, key
    for service, operation in [("ipfs", "add_and_pin"), ("chain", "broadcast")]:
        for category in ("network", "resource"):
            key = (
                "r3mes_retries_total",
                (("category", category), ("operation", operation), ("service", service)),
            )
            assert samples[key] == 0, key


def test_verdicts_credits_and_rejection_reasons_are_born_at_zero() -> None:
    samples = _scrape(MinerMetrics())

    for verdict in ("accepted", "rejected", "pending"):
        assert samples[("r3mes_submissions_by_verdict", (("verdict", verdict),))] == 0
    for reason in Reason:
        if reason is not Reason.ACCEPTED:
            key = ("r3mes_rejections_total", (("reason", reason.name.lower()),))
            assert samples[key] == 0, key
    assert samples[("r3mes_credits_earned_total", ())] == 0
    assert samples[("r3mes_verdicts_overdue", ())] == 0


def test_verdict_totals_come_from_the_journals_statistics() -> None:
    metrics = MinerMetrics()
    metrics.set_snapshot(
        stats={
            "verdicts_accepted": 3,
            "verdicts_rejected": 1,
            "verdicts_pending": 2,
            "verdicts_overdue": 1,
            "credits_total": 300,
            "rejection_reasons": {"segment_mismatch": 1},
        },
        breakers={},
    )
    samples = _samples(metrics.exposition().decode())

    assert samples[("r3mes_submissions_by_verdict", (("verdict", "accepted"),))] == 3
    assert samples[("r3mes_submissions_by_verdict", (("verdict", "pending"),))] == 2
    assert samples[("r3mes_rejections_total", (("reason", "segment_mismatch"),))] == 1
    assert samples[("r3mes_rejections_total", (("reason", "not_bound"),))] == 0
    assert samples[("r3mes_credits_earned_total", ())] == 300
    assert samples[("r3mes_verdicts_overdue", ())] == 1


def test_the_network_model_series_exist_from_the_first_scrape() -> None:
    """Version 0 is the genesis adapter (none published yet); its loss is unknown, NaN
    rather than a 0 that would read as a perfect model."""
    samples = _scrape(MinerMetrics())

    assert samples[("r3mes_model_version", ())] == 0
    assert math.isnan(samples[("r3mes_model_eval_loss", ())])
    assert samples[("r3mes_updates_aggregated_total", ())] == 0


def test_increase_over_a_fresh_process_sees_the_first_failure() -> None:
    bus = EventBus()
    metrics = MinerMetrics(bus)
    key = (
        "r3mes_transaction_failures_total",
        (("category", "network"), ("step", "ipfs_upload")),
    )
    committed = ("r3mes_transitions_total", (("state", "committed"),))
    retried = (
        "r3mes_retries_total",
        (("category", "network"), ("operation", "add_and_pin"), ("service", "ipfs")),
    )
    first = _scrape(metrics)
    bus.publish(_tx("b", None, "pending", 150.0))
    bus.publish(
        RetryScheduled(
            operation="add_and_pin",
            service="ipfs",
            attempt=1,
            delay=1.0,
            category="network",
            message="reset",
        )
    )
    bus.publish(
        _tx(
            "b",
            "ipfs_upload",
            "failed",
            151.0,
            failed_step="ipfs_upload",
            error_category="network",
        )
    )
    second = _scrape(metrics)

    assert _increase([first.get(key), second.get(key)]) == 1
    assert _increase([first.get(retried), second.get(retried)]) == 1
    # R3mesNoCommits sums increase() of this series: it must exist (at 0) without a commit
    assert _increase([first.get(committed), second.get(committed)]) == 0


def test_retried_operations_of_the_core_are_all_known() -> None:
    """A new or renamed retried call must be added to RETRY_OPERATIONS, or its first retry
    after each start is lost to `increase()` again."""
    core = Path(__file__).resolve().parents[3] / "r3mes_desktop" / "core"
    called: set[str] = set()
    watchers = [core / "verdict_watch.py", core / "model_watch.py"]
    for path in [*(core / "saga").glob("*.py"), core / "miner.py", *watchers]:
        text = path.read_text()
        called |= set(re.findall(r"\.call\(\s*\"([a-z_]+)\"", text))
        called |= set(re.findall(r"operation=\"([a-z_]+)\"", text))
    known = {op for ops in RETRY_OPERATIONS.values() for op in ops}
    assert {"add_and_pin", "broadcast", "complete_task", "train", "submission_info"} <= called
    assert called <= known, called - known


PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
"""The Accept header Prometheus 2.x sends with each scrape."""


async def test_metrics_speak_openmetrics_when_the_scraper_asks(api: Api) -> None:
    api.bus.publish(_tx("a", None, "pending", 100.0))
    api.bus.publish(_tx("a", "task_complete", "committed", 130.0))

    resp = await api.client.get("/metrics", headers={"Accept": PROMETHEUS_ACCEPT})

    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
    assert "Accept" in resp.headers["Vary"]
    text = await resp.text()
    assert text.endswith("# EOF\n")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in openmetrics_families(text)  # strict: rejects the 0.0.4 text format
        for s in family.samples
    }
    assert samples[("r3mes_transitions_total", (("state", "committed"),))] == 1
    assert samples[("r3mes_transitions_total", (("state", "failed"),))] == 0
    assert samples[("r3mes_transactions", (("state", "committed"),))] == 3


async def test_metrics_default_to_the_text_format(api: Api) -> None:
    for headers in ({}, {"Accept": "*/*"}, {"Accept": "text/plain;version=0.0.4"}):
        resp = await api.client.get("/metrics", headers=headers)

        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        text = await resp.text()
        assert "# EOF" not in text
        assert ("r3mes_transactions", (("state", "committed"),)) in _samples(text)
