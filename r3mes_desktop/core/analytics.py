"""Error analytics over a sliding window of the journal, each finding with advice.

Three detectors, chosen because each maps to something a miner can act on:
- error rate: too many of the transactions finished in the window did not commit;
- spike: far more errors in the window than the average of the preceding windows;
- repetition: the same error (same category, same message shape) keeps coming back.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from typing import Any

RECOMMENDATIONS: dict[str, str] = {
    "network": (
        "Check that the IPFS node and the chain RPC endpoint are running and reachable; "
        "calls are retried and the circuit breaker pauses them while a service is down."
    ),
    "authentication": (
        "Check the wallet: enough balance for gas, the keystore unlocked, and this miner "
        "registered; retry the dead letters once fixed."
    ),
    "resource": (
        "Free memory, GPU memory or disk space (close other GPU programs, lower the batch "
        "size, clean old checkpoints)."
    ),
    "validation": (
        "The network rejected what was sent; retrying the same input will not help. Update "
        "the app or check the round parameters, then open the diagnostics."
    ),
    "permanent": (
        "These rounds cannot succeed (model missing, round closed); discard their dead "
        "letters or retry after the cause is fixed."
    ),
    "unknown": "Open the diagnostics and report the error with the exported bundle.",
}


@dataclass(frozen=True)
class AnalyticsConfig:
    window_s: float = 300.0
    baseline_windows: int = 6
    error_rate_threshold: float = 0.2
    min_finished: int = 3
    spike_factor: float = 3.0
    min_spike_errors: int = 5
    repeat_threshold: int = 3


_SHAPE = re.compile(r"0x[0-9a-fA-F]+|[0-9a-f]{16,}|\d+(\.\d+)?")


Finding = dict[str, Any]
"""One finding as the API and the GUI show it (kind, severity, category, message, ...)."""


def message_shape(message: str) -> str:
    """The message with numbers, hashes and hex replaced, so repeats group together."""
    return _SHAPE.sub("#", message).strip()


def analyse(conn: sqlite3.Connection, *, now: float, config: AnalyticsConfig) -> dict[str, Any]:
    """Three looks at the last window: the share of transactions that did not commit, an
    error spike against the windows before it, and the same error repeating."""
    since = now - config.window_s
    finished, rate, by_rate = _error_rate(conn, since, config)
    current, baseline, by_spike = _spike(conn, since, now, config)
    findings = [*by_rate, *by_spike, *_repeats(conn, since, config)]
    return {
        "window_s": config.window_s,
        "finished_in_window": finished,
        "error_rate": rate,
        "errors_in_window": current,
        "baseline_errors_per_window": baseline,
        "findings": findings,
    }


def _finding(kind: str, severity: str, category: str, message: str, **extra: Any) -> Finding:
    return {
        "kind": kind,
        "severity": severity,
        "category": category,
        **extra,
        "message": message,
        "recommendation": RECOMMENDATIONS.get(category, RECOMMENDATIONS["unknown"]),
    }


def _error_rate(
    conn: sqlite3.Connection, since: float, config: AnalyticsConfig
) -> tuple[int, float, list[Finding]]:
    finished, not_committed = conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(state != 'committed'), 0) FROM transactions "
        "WHERE finished_at >= ?",
        (since,),
    ).fetchone()
    rate = not_committed / finished if finished else 0.0
    if finished < config.min_finished or rate <= config.error_rate_threshold:
        return finished, rate, []
    top = conn.execute(
        "SELECT error_category, COUNT(*) AS n FROM transactions WHERE finished_at >= ? "
        "AND state != 'committed' AND error_category IS NOT NULL "
        "GROUP BY error_category ORDER BY n DESC LIMIT 1",
        (since,),
    ).fetchone()
    category = top[0] if top else "unknown"
    message = (
        f"{not_committed} of {finished} transactions in the last {config.window_s:g}s did not "
        f"commit ({rate:.0%}, threshold {config.error_rate_threshold:.0%}); "
        f"mostly {category} errors"
    )
    return finished, rate, [_finding("error_rate", "error", category, message)]


def _spike(
    conn: sqlite3.Connection, since: float, now: float, config: AnalyticsConfig
) -> tuple[int, float, list[Finding]]:
    count_sql = "SELECT COUNT(*) FROM events WHERE category IS NOT NULL AND ts > ? AND ts <= ?"
    current = conn.execute(count_sql, (since, now)).fetchone()[0]
    base_start = since - config.window_s * config.baseline_windows
    baseline = conn.execute(count_sql, (base_start, since)).fetchone()[0] / config.baseline_windows
    if current < config.min_spike_errors or current < config.spike_factor * max(baseline, 1.0):
        return current, baseline, []
    top = conn.execute(
        "SELECT category, COUNT(*) AS n FROM events WHERE category IS NOT NULL AND ts > ? "
        "GROUP BY category ORDER BY n DESC LIMIT 1",
        (since,),
    ).fetchone()
    category = top[0] if top else "unknown"
    message = (
        f"{current} errors in the last {config.window_s:g}s against a baseline of "
        f"{baseline:.1f} per window; mostly {category}"
    )
    return current, baseline, [_finding("spike", "warning", category, message)]


def _repeats(conn: sqlite3.Connection, since: float, config: AnalyticsConfig) -> list[Finding]:
    groups: dict[tuple[str, str], int] = {}
    for category, message in conn.execute(
        "SELECT category, COALESCE(message, '') FROM events WHERE category IS NOT NULL AND ts > ?",
        (since,),
    ):
        key = (category, message_shape(message))
        groups[key] = groups.get(key, 0) + 1
    return [
        _finding(
            "repeating",
            "warning",
            category,
            f"the same {category} error occurred {count} times: {shape}",
            count=count,
        )
        for (category, shape), count in sorted(groups.items(), key=lambda kv: -kv[1])
        if count >= config.repeat_threshold
    ]
