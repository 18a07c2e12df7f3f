"""Prometheus metrics for one miner, in a registry of its own (never the global one).

Two sources: live events from the core bus (retries, failures, commit latency, tokens/s,
hash rate) and, at scrape time, the journal's totals and the breakers' snapshots (so the
counts survive restarts and agree with `r3mes-miner stats`): transactions by state, errors,
submissions by verdict, rejections by reason, the credits earned, and the network model's
current version with its held-out loss. A per-app registry lets the GUI, the CLI and tests
run several apps in one process without duplicate-metric errors.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from r3mes_desktop.api.governor_metrics import GovernorCollector, GovernorView
from r3mes_desktop.core.errors import RETRYABLE, ErrorCategory
from r3mes_desktop.core.events import (
    Event,
    EventBus,
    RetryScheduled,
    StepProgress,
    TransactionStateChanged,
)
from r3mes_desktop.core.stats import REJECTION_REASONS
from r3mes_desktop.core.txstate import STEPS

BREAKER_STATES = ("closed", "half_open", "open", "forced_open", "disabled")
TX_STATES = (
    "pending",
    "fetch",
    "training",
    "ipfs_upload",
    "blockchain_submit",
    "task_complete",
    "committed",
    "compensating",
    "failed",
    "rolled_back",
)
FAILURE_STATES = frozenset({"failed", "rolled_back", "compensating"})
LATENCY_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, float("inf"))
MAX_TRACKED = 10_000
FAILURE_CATEGORIES = tuple(c.value for c in ErrorCategory)
FAILURE_STEPS = (*(s.value for s in STEPS), "unknown")
RETRY_OPERATIONS: Mapping[str, tuple[str, ...]] = {
    "trainer": ("train",),
    "pow": ("pow",),
    "ipfs": ("add_and_pin", "is_pinned", "unpin", "fetch_model", "fetch_dataset"),
    "chain": (
        "open_rounds",
        "sign_submission",
        "broadcast",
        "receipt",
        "submission_of",
        "latest_block",
        "submission_info",
        "round_info",
        "current_version",
        "version_info",
    ),
    "task_api": ("complete_task",),
}
"""The (service, operation) pairs the coordinator and the miner loop retry. Their retry
series exist at 0 from the start; another pair still counts, from its first retry on."""
RETRY_CATEGORIES = tuple(sorted(c.value for c in RETRYABLE))
VERDICTS = ("accepted", "rejected", "pending")
"""Committed submissions by what the validators said; "pending": no verdict yet."""


def _num(stats: Mapping[str, Any], key: str) -> float:
    value = stats.get(key)
    return float(value) if isinstance(value, int | float) else 0.0


def states_of(stats: Mapping[str, Any]) -> dict[str, float]:
    """Transactions per state from the coordinator's statistics.

    Uses `by_state` when present; otherwise the summary totals, where `failed_transactions`
    includes the rolled-back and compensating ones (subtracted here so nothing counts
    twice) and unfinished transactions are reported together as `active`.
    """
    by_state = stats.get("by_state") or stats.get("transactions_by_state")
    if isinstance(by_state, Mapping):
        return {**dict.fromkeys(TX_STATES, 0.0), **{str(k): float(v) for k, v in by_state.items()}}

    found = {
        "committed": _num(stats, "committed_transactions"),
        "rolled_back": _num(stats, "rolled_back_transactions"),
        "compensating": _num(stats, "compensating_transactions"),
        "active": _num(stats, "active_transactions"),
    }
    found["failed"] = max(
        0.0, _num(stats, "failed_transactions") - found["rolled_back"] - found["compensating"]
    )
    return found


def verdicts_of(stats: Mapping[str, Any]) -> dict[str, float]:
    """Committed submissions by verdict, every label present (0 before any verdict)."""
    return {verdict: _num(stats, f"verdicts_{verdict}") for verdict in VERDICTS}


def rejections_of(stats: Mapping[str, Any]) -> dict[str, float]:
    """Rejections by reason, every reason present (0 when none)."""
    found = stats.get("rejection_reasons")
    counts = dict.fromkeys(REJECTION_REASONS, 0.0)
    if isinstance(found, Mapping):
        counts.update({str(k): float(v) for k, v in found.items() if isinstance(v, int | float)})
    return counts


def errors_of(stats: Mapping[str, Any]) -> dict[str, float]:
    """Errors per category: `error_breakdown` as {"network": 3} or {"network_errors": 3}."""
    breakdown = stats.get("error_breakdown") or stats.get("errors_by_category") or {}
    if not isinstance(breakdown, Mapping):
        return {}
    out: dict[str, float] = {}
    for key, value in breakdown.items():
        if isinstance(value, int | float):
            out[str(key).removesuffix("_errors")] = float(value)
    return out


class _SnapshotCollector(Collector):
    """Yields the last journal/breaker snapshot the scrape handler stored."""

    def __init__(self) -> None:
        self.stats: Mapping[str, Any] = {}
        self.breakers: Mapping[str, Mapping[str, Any]] = {}

    def collect(self) -> Iterable[Metric]:
        tx = GaugeMetricFamily(
            "r3mes_transactions", "Transactions in the journal by state", labels=["state"]
        )
        states = states_of(self.stats)
        for state in sorted(states):
            tx.add_metric([state], states.get(state, 0.0))
        yield tx
        errors = CounterMetricFamily(
            "r3mes_errors",
            "Transaction errors recorded in the journal by category",
            labels=["category"],
        )
        for category, count in sorted(errors_of(self.stats).items()):
            errors.add_metric([category], count)
        yield errors
        breaker_state = GaugeMetricFamily(
            "r3mes_breaker_state",
            "Circuit breaker state (1 for the current state)",
            labels=["service", "state"],
        )
        failures = CounterMetricFamily(
            "r3mes_breaker_failures", "Calls the breaker recorded as failed", labels=["service"]
        )
        rejections = CounterMetricFamily(
            "r3mes_breaker_rejections", "Calls the open breaker rejected", labels=["service"]
        )
        for service, snap in sorted(self.breakers.items()):
            current = str(snap.get("state", ""))
            for name in BREAKER_STATES:
                breaker_state.add_metric([service, name], 1.0 if name == current else 0.0)
            failures.add_metric([service], float(snap.get("failures", 0)))
            rejections.add_metric([service], float(snap.get("rejections", 0)))
        yield breaker_state
        yield failures
        yield rejections
        yield from self._earnings()

    def _earnings(self) -> Iterable[Metric]:
        """What the validators said and what it earned (journal totals, born at 0)."""
        verdicts = GaugeMetricFamily(
            "r3mes_submissions_by_verdict",
            "Committed submissions by validators' verdict (pending: none yet)",
            labels=["verdict"],
        )
        for verdict, count in verdicts_of(self.stats).items():
            verdicts.add_metric([verdict], count)
        yield verdicts
        yield GaugeMetricFamily(
            "r3mes_verdicts_overdue",
            "Committed submissions still without a verdict after the overdue block count",
            value=_num(self.stats, "verdicts_overdue"),
        )
        reasons = CounterMetricFamily(
            "r3mes_rejections", "Rejected submissions by the verdict's reason", labels=["reason"]
        )
        for reason, count in sorted(rejections_of(self.stats).items()):
            reasons.add_metric([reason], count)
        yield reasons
        yield CounterMetricFamily(
            "r3mes_credits_earned",
            "Credits the accepted submissions earned (the rounds' rewards)",
            value=_num(self.stats, "credits_total"),
        )
        yield from self._model()

    def _model(self) -> Iterable[Metric]:
        """The network model (journal, born with the first scrape): the newest version
        read from the chain (0: the genesis adapter, none published yet) and its held-out
        loss, NaN while no version is known: a loss of 0 would read as a perfect model."""
        yield GaugeMetricFamily(
            "r3mes_model_version",
            "The network model's current version, as read from the chain (0: genesis)",
            value=_num(self.stats, "model_version"),
        )
        loss = self.stats.get("model_eval_loss")
        yield GaugeMetricFamily(
            "r3mes_model_eval_loss",
            "Held-out loss of the network model's current version, nats per token "
            "(NaN before the first version)",
            value=float(loss) if isinstance(loss, int | float) else math.nan,
        )
        yield CounterMetricFamily(
            "r3mes_updates_aggregated",
            "Accepted updates of this miner that went into a network model version",
            value=_num(self.stats, "updates_aggregated"),
        )


class MinerMetrics:
    """All of one miner's metrics; subscribe once, scrape often."""

    def __init__(
        self, bus: EventBus | None = None, *, governor: GovernorView | None = None
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._snapshot = _SnapshotCollector()
        self.registry.register(self._snapshot)
        self.governor = GovernorCollector(bus, governor)
        self.registry.register(self.governor)
        r = self.registry
        self.retries = Counter(
            "r3mes_retries",
            "Retries scheduled by the retry policy",
            ["service", "operation", "category"],
            registry=r,
        )
        self.failures = Counter(
            "r3mes_transaction_failures",
            "Transactions that failed, by category and step",
            ["category", "step"],
            registry=r,
        )
        self.transitions = Counter(
            "r3mes_transitions", "Transaction state changes seen", ["state"], registry=r
        )
        self.commit_latency = Histogram(
            "r3mes_commit_latency_seconds",
            "Time from transaction start to commit",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens_per_s = Gauge(
            "r3mes_training_tokens_per_second",
            "Training throughput of the current step",
            registry=r,
        )
        self.hash_rate = Gauge(
            "r3mes_pow_hash_rate",
            "Proof-of-work hashes per second of the current search",
            registry=r,
        )
        self.step_progress = Gauge(
            "r3mes_step_progress", "Fraction done of the current step", ["step"], registry=r
        )
        self.up_since = Gauge("r3mes_start_time_seconds", "When this miner started", registry=r)
        self.up_since.set(time.time())
        self._create_known_children()
        self._started: dict[str, float] = {}
        self._unsubscribe = bus.subscribe(self.observe) if bus is not None else None

    def _create_known_children(self) -> None:
        """Every known label combination of the live counters, at 0.

        A labelled child is otherwise born at its first increment, with the value 1: the
        scraper never sees it at 0, so `increase()` misses the first failure of each kind
        after every start, and a rule on a series that does not exist yet (no commit since
        the start) finds nothing to fire on.
        """
        for state in TX_STATES:
            self.transitions.labels(state)
        for category in FAILURE_CATEGORIES:
            for step in FAILURE_STEPS:
                self.failures.labels(category, step)
        for service, operations in RETRY_OPERATIONS.items():
            for operation in operations:
                for category in RETRY_CATEGORIES:
                    self.retries.labels(service, operation, category)

    def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self.governor.close()

    async def refresh(self) -> None:
        """Readings taken at scrape time that block (NVML): in a thread."""
        await self.governor.refresh()

    def set_snapshot(
        self, *, stats: Mapping[str, Any], breakers: Mapping[str, Mapping[str, Any]]
    ) -> None:
        self._snapshot.stats = stats
        self._snapshot.breakers = breakers

    def exposition(self) -> bytes:
        """The classic text format (0.0.4)."""
        return generate_latest(self.registry)

    def negotiate(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition and its Content-Type in the format the scraper's `Accept` asks for.

        Prometheus lists `application/openmetrics-text` first: OpenMetrics carries the
        counters' `_created` times and an `# EOF` that tells a cut-off scrape from a short
        one. Anything else (curl, an old scraper) gets the text format 0.0.4. The choice is
        prometheus_client's own, so it follows the formats the library can write.
        """
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

    def observe(self, event: Event) -> None:
        if isinstance(event, RetryScheduled):
            self.retries.labels(event.service or "none", event.operation, event.category).inc()
        elif isinstance(event, TransactionStateChanged):
            self._on_transition(event)
        elif isinstance(event, StepProgress):
            self.step_progress.labels(event.step).set(event.fraction)
            tps = event.detail.get("tokens_per_s")
            if isinstance(tps, int | float):
                self.tokens_per_s.set(tps)
            rate = event.detail.get("hash_rate")
            if isinstance(rate, int | float):
                self.hash_rate.set(rate)

    def _on_transition(self, event: TransactionStateChanged) -> None:
        self.transitions.labels(event.new_state).inc()
        tx = event.transaction_id
        if event.old_state in (None, "pending") and tx not in self._started:
            if len(self._started) >= MAX_TRACKED:
                self._started.pop(next(iter(self._started)))
            self._started[tx] = event.ts
        if event.new_state == "committed":
            start = self._started.pop(tx, None)
            if start is not None:
                self.commit_latency.observe(max(0.0, event.ts - start))
        elif event.new_state in FAILURE_STATES:
            self._started.pop(tx, None)
            if event.old_state not in FAILURE_STATES:
                self.failures.labels(
                    event.error_category or "unknown", event.failed_step or "unknown"
                ).inc()
