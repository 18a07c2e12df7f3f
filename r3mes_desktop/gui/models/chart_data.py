"""What the charts show, as plain numbers: fed by events and statistics, read by the plots.

Kept apart from the pyqtgraph widgets so the window can collect data from its first second
while pyqtgraph (about 0.7 s to import) loads after the first paint.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from r3mes_desktop.core.events import (
    Event,
    ModelVersionPublished,
    StepProgress,
    TransactionStateChanged,
    VerdictRecorded,
)
from r3mes_desktop.core.txstate import TxState

if TYPE_CHECKING:
    from r3mes_desktop.core.records import ModelVersion

THROUGHPUT_WINDOW_S = 120.0

CATEGORIES = ("network", "authentication", "resource", "validation", "permanent", "unknown")
# Tick labels short enough for a third of the window (the full names are in the tooltip).
CATEGORY_LABELS = ("network", "auth", "resource", "invalid", "perm.", "unknown")
CATEGORY_COLOURS = ("#1565c0", "#6a1b9a", "#ef6c00", "#c62828", "#4e342e", "#757575")
PARTS = ("errors", "rates", "throughput", "loss", "network", "hash", "credits", "summary")
NetworkMark = tuple[int, float | None]
"""The newest model version and its loss, as the statistics say (`model_version`,
`model_eval_loss`): when they differ from the chart's, the journal holds versions the
chart has not seen."""


class ChartData:
    """What the charts show, kept as plain numbers (testable without painting)."""

    def __init__(self, *, points: int = 600, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self.t0 = clock()
        self.errors: dict[str, int] = dict.fromkeys(CATEGORIES, 0)
        self.rates: dict[str, deque[tuple[float, float]]] = {
            name: deque(maxlen=points) for name in ("success", "failure", "rollback")
        }
        self.throughput: deque[tuple[float, float]] = deque(maxlen=points)
        self.loss: deque[tuple[float, float]] = deque(maxlen=points)
        self.hash_rate: deque[tuple[float, float]] = deque(maxlen=points)
        self.committed = 0
        self.commit_times: deque[float] = deque(maxlen=10_000)
        self.last_stats: dict[str, Any] = {}
        # Credits over time: (unix time a verdict was read, total credits by then), from the
        # journal (`set_credits`) and extended live by each verdict event.
        self.credits: deque[tuple[float, float]] = deque(maxlen=points)
        self.credits_total = 0
        self.verdicts_seen: int | None = None  # final verdicts `credits` reflects (None: unread)
        # The network model's held-out loss per version (x = version id), from the journal
        # (`set_network`) and extended live by each version event; the newest `points`.
        self.network: dict[int, float] = {}
        self._points = points
        self.network_seen: NetworkMark | None = None  # the newest version charted (None: unread)
        self.dirty = False
        # What changed since the plots last drew it: each plot redraws only its own part.
        self.versions: dict[str, int] = dict.fromkeys(PARTS, 0)

    def _changed(self, *parts: str) -> None:
        for part in parts:
            self.versions[part] += 1
        self.dirty = True

    def now(self) -> float:
        """Wall-clock time (the credits series is on the wall clock, not since t0)."""
        return self._clock()

    def _t(self, ts: float | None = None) -> float:
        return (ts if ts is not None else self._clock()) - self.t0

    def add_event(self, event: Event) -> None:
        if isinstance(event, ModelVersionPublished):
            self._add_versions([(event.version_id, event.eval_loss)])
            return
        if isinstance(event, VerdictRecorded):
            self.credits_total += event.credits
            self.credits.append((event.ts, float(self.credits_total)))
            if self.verdicts_seen is not None:
                self.verdicts_seen += 1
            self._changed("credits")
            return
        if isinstance(event, TransactionStateChanged):
            if event.new_state == TxState.COMMITTED:
                self.commit_times.append(event.ts)
            return
        if not isinstance(event, StepProgress):
            return
        detail = event.detail
        if "loss" in detail:
            self.loss.append((self._t(event.ts), float(detail["loss"])))
            self._changed("loss")
        if "hash_rate" in detail:
            self.hash_rate.append((self._t(event.ts), float(detail["hash_rate"])))
            self._changed("hash")

    def add_stats(self, stats: Mapping[str, Any], ts: float | None = None) -> None:
        """Fold one statistics snapshot (the coordinator's statistics keys)."""
        t = self._t(ts)
        if dict(stats) != self.last_stats:
            self._changed("summary")
        self.last_stats = dict(stats)
        breakdown = {
            str(key).removesuffix("_errors"): int(count or 0)
            for key, count in (stats.get("error_breakdown") or {}).items()
        }  # the journal's keys are "network_errors", ...; older shapes use "network"
        errors = dict.fromkeys(CATEGORIES, 0)
        for cat, count in breakdown.items():
            errors[cat if cat in errors else "unknown"] += count
        if errors != self.errors:
            self.errors = errors
            self._changed("errors")
        total = float(stats.get("total_transactions", 0) or 0)
        committed = float(stats.get("committed_transactions", stats.get("committed", 0)) or 0)
        failed = float(stats.get("failed_transactions", stats.get("failed", 0)) or 0)
        rolled = float(stats.get("rolled_back_transactions", stats.get("rolled_back", 0)) or 0)
        self.committed = int(committed)

        def rate(key: str, count: float) -> float:
            value = stats.get(key)
            if value is not None:
                return float(value)
            return count / total if total else 0.0

        self.rates["success"].append((t, rate("success_rate", committed)))
        self.rates["failure"].append((t, rate("failure_rate", failed)))
        self.rates["rollback"].append((t, rate("rollback_rate", rolled)))
        self.throughput.append((t, self.recent_throughput(ts)))
        self._changed("rates", "throughput")
        if "credits_total" in stats:
            self.credits_total = int(stats.get("credits_total") or 0)

    @staticmethod
    def verdicts_in(stats: Mapping[str, Any]) -> int:
        return int(stats.get("verdicts_accepted") or 0) + int(stats.get("verdicts_rejected") or 0)

    def needs_credits(self, stats: Mapping[str, Any]) -> bool:
        """Whether the journal holds verdicts the credits series has not seen (read it
        again then: at start, and after a verdict the events did not bring)."""
        return self.verdicts_seen != self.verdicts_in(stats)

    def set_credits(self, series: list[tuple[float, int]], *, verdicts: int) -> None:
        """The journal's credits series (`Coordinator.credits_series`), replacing ours."""
        points = [(float(at), float(total)) for at, total in series]
        if points != list(self.credits):
            self.credits.clear()
            self.credits.extend(points)
            self._changed("credits")
        if points:
            self.credits_total = int(points[-1][1])
        self.verdicts_seen = verdicts

    @staticmethod
    def network_in(stats: Mapping[str, Any]) -> NetworkMark:
        loss = stats.get("model_eval_loss")
        return int(stats.get("model_version") or 0), None if loss is None else float(loss)

    def needs_network(self, stats: Mapping[str, Any]) -> bool:
        """Whether the journal's newest version is not the chart's (read the series again
        then: at start, after versions no event brought, after a switch of network)."""
        return self.network_seen != self.network_in(stats)

    def set_network(self, versions: list[ModelVersion], *, seen: NetworkMark) -> None:
        """The journal's versions (`Coordinator.model_versions`), replacing ours."""
        points = {v.version_id: float(v.eval_loss) for v in versions}
        if points != self.network:
            self.network = {}
            self._add_versions(sorted(points.items()))
        self.network_seen = seen

    def _add_versions(self, points: list[tuple[int, float]]) -> None:
        for version, loss in points:
            self.network[version] = loss
            if self.network_seen is not None and version > self.network_seen[0]:
                self.network_seen = (version, loss)
        if len(self.network) > self._points:  # keep the newest
            for version in sorted(self.network)[: len(self.network) - self._points]:
                del self.network[version]
        self._changed("network")

    def network_series(self) -> tuple[list[float], list[float]]:
        """(versions, losses) in version order, for the plot."""
        versions = sorted(self.network)
        return [float(v) for v in versions], [self.network[v] for v in versions]

    def recent_throughput(self, ts: float | None = None) -> float:
        """Commits per minute over the last two minutes (or since the window opened).

        The journal's figure averages over its whole statistics window, which lags far
        behind what the miner is doing now; the chart shows the recent rate.
        """
        now = ts if ts is not None else self._clock()
        span = max(10.0, min(THROUGHPUT_WINDOW_S, now - self.t0))
        recent = sum(1 for t in self.commit_times if now - t <= span)
        return recent * 60.0 / span
