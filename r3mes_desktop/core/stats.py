"""Statistics derived from the journal, so they are exact and survive restarts.

Keys follow the seeds. As there, `failed_transactions` counts every transaction that did
not commit (FAILED, ROLLED_BACK, and COMPENSATING ones whose undo is still pending) and
`rolled_back_transactions` the subset that was fully undone; rates are over all
transactions. Throughput and commit times are over the last `window_s` seconds, but
`transactions_per_minute` divides that window's commits by the part of the window the journal
covers (`throughput_covered_s`: since its first transaction, at least `MIN_COVERED_S`), so a
miner that has run 20 s reports its real rate rather than spreading its commits over an hour
it did not exist for. Time the miner was stopped after its first transaction stays covered:
the commits before a restart are in the window too.
`error_breakdown` counts every journaled error occurrence (each retried attempt, each final
failure, each failed undo or deferred completion) by category.
Verdicts are what the chain's validators said of committed submissions: `verdicts_pending`
counts the committed ones still waiting (`verdicts_overdue` those waiting longer than the
setting allows), `credits_total` what the accepted ones earned, and `rejection_reasons` the
rejections by reason (every `Reason` but ACCEPTED, at 0 when none).
The network model: `model_version` is the newest version journaled from the chain (0: none,
the genesis adapter), `model_eval_loss` its held-out loss (None while there is none), and
`updates_aggregated` the accepted updates of ours that went into a version (a version
aggregates exactly the accepted updates of the round it names).
"""

from __future__ import annotations

import sqlite3
from typing import Any

from r3mes_desktop.core.errors import ErrorCategory
from r3mes_desktop.core.workproof import Reason

BREAKDOWN_KEYS: tuple[str, ...] = tuple(f"{c.value}_errors" for c in ErrorCategory)
MIN_COVERED_S = 1.0
"""Floor of the throughput's time base, so commits in the journal's first instant do not
divide by zero or report an absurd rate."""


def _percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return 0.0
    rank = max(1, -(-len(sorted_values) * q // 100))  # ceil(n * q / 100)
    return sorted_values[int(rank) - 1]


def compute_statistics(conn: sqlite3.Connection, *, now: float, window_s: float) -> dict[str, Any]:
    by_state = dict(conn.execute("SELECT state, COUNT(*) FROM transactions GROUP BY state"))
    total = sum(by_state.values())
    committed = by_state.get("committed", 0)
    rolled_back = by_state.get("rolled_back", 0)
    compensating = by_state.get("compensating", 0)
    failed = by_state.get("failed", 0) + rolled_back + compensating
    active = total - committed - failed
    since = now - window_s
    durations = sorted(
        row[0]
        for row in conn.execute(
            "SELECT finished_at - created_at FROM transactions "
            "WHERE state = 'committed' AND finished_at >= ?",
            (since,),
        )
    )
    errors = dict(
        conn.execute(
            "SELECT category, COUNT(*) FROM events WHERE category IS NOT NULL GROUP BY category"
        )
    )
    outbox_pending = conn.execute("SELECT COUNT(*) FROM outbox WHERE done_at IS NULL").fetchone()[0]
    first_created = conn.execute("SELECT MIN(created_at) FROM transactions").fetchone()[0]
    covered = window_s
    if first_created is not None:
        covered = min(window_s, max(now - first_created, MIN_COVERED_S))
    dead_letters = conn.execute(
        "SELECT COUNT(*) FROM dead_letters WHERE status = 'open'"
    ).fetchone()[0]
    return {
        "total_transactions": total,
        "committed_transactions": committed,
        "failed_transactions": failed,
        "rolled_back_transactions": rolled_back,
        "compensating_transactions": compensating,
        "active_transactions": active,
        "success_rate": committed / total if total else 0.0,
        "failure_rate": failed / total if total else 0.0,
        "rollback_rate": rolled_back / total if total else 0.0,
        "window_s": window_s,
        "throughput_covered_s": covered,
        "transactions_per_minute": len(durations) * 60.0 / covered if covered > 0 else 0.0,
        "commit_time_mean_s": sum(durations) / len(durations) if durations else 0.0,
        "commit_time_p50_s": _percentile(durations, 50),
        "commit_time_p95_s": _percentile(durations, 95),
        "error_breakdown": {
            f"{c.value}_errors": int(errors.get(c.value, 0)) for c in ErrorCategory
        },
        "pending_task_completions": outbox_pending,
        "open_dead_letters": dead_letters,
        **_verdicts(conn),
        **_model(conn),
    }


def _model(conn: sqlite3.Connection) -> dict[str, Any]:
    """The newest journaled model version and how many of our updates went into one."""
    newest = conn.execute(
        "SELECT version_id, eval_loss FROM model_versions ORDER BY version_id DESC LIMIT 1"
    ).fetchone()
    aggregated = conn.execute(
        "SELECT COUNT(*) FROM transactions t WHERE t.verdict = 'accepted' AND EXISTS "
        "(SELECT 1 FROM model_versions m WHERE m.round_id = t.round_id)"
    ).fetchone()[0]
    return {
        "model_version": 0 if newest is None else int(newest[0]),
        "model_eval_loss": None if newest is None else float(newest[1]),
        "updates_aggregated": int(aggregated),
    }


REJECTION_REASONS: tuple[str, ...] = tuple(
    r.name.lower() for r in Reason if r is not Reason.ACCEPTED
)


def _verdicts(conn: sqlite3.Connection) -> dict[str, Any]:
    """Verdict counts and credits from the committed transactions (indexed, partial)."""
    accepted, rejected, credits = conn.execute(
        "SELECT COUNT(*) FILTER (WHERE verdict = 'accepted'), "
        "COUNT(*) FILTER (WHERE verdict = 'rejected'), COALESCE(SUM(credits), 0) "
        "FROM transactions WHERE verdict IS NOT NULL"
    ).fetchone()
    pending, overdue = conn.execute(
        "SELECT COUNT(*), COUNT(verdict_overdue_at) FROM transactions "
        "WHERE state = 'committed' AND verdict IS NULL"
    ).fetchone()
    reasons = dict.fromkeys(REJECTION_REASONS, 0)
    for code, count in conn.execute(
        "SELECT verdict_reason, COUNT(*) FROM transactions WHERE verdict = 'rejected' "
        "GROUP BY verdict_reason"
    ):
        try:
            name = Reason(code).name.lower()
        except ValueError:
            name = "unknown"
        reasons[name] = reasons.get(name, 0) + int(count)
    return {
        "verdicts_accepted": int(accepted),
        "verdicts_rejected": int(rejected),
        "verdicts_pending": int(pending),
        "verdicts_overdue": int(overdue),
        "credits_total": int(credits),
        "rejection_reasons": reasons,
    }
