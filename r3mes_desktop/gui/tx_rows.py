"""One transaction as the table shows it, built from journal records and core events.

No Qt here: `TxRow` and the sentences about a transaction's history are plain data and
text, used by the table model, the details panel and their tests.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from r3mes_desktop.core.events import (
    CompensationDone,
    CompensationFailed,
    Event,
    RetryScheduled,
    TransactionStateChanged,
)
from r3mes_desktop.notices import undo_text

STEPS = ("TRAINING", "IPFS_UPLOAD", "BLOCKCHAIN_SUBMIT", "TASK_COMPLETE")
STEP_LABELS = {
    "TRAINING": "train",
    "IPFS_UPLOAD": "upload",
    "BLOCKCHAIN_SUBMIT": "submit",
    "TASK_COMPLETE": "task",
}
TERMINAL = frozenset({"COMMITTED", "FAILED", "ROLLED_BACK"})
TERMINAL_STATES = TERMINAL

# StepProgress.step names used by the adapters, mapped onto saga steps.
PROGRESS_STEP = {
    "training": "TRAINING",
    "train": "TRAINING",
    "pow": "TRAINING",
    "upload": "IPFS_UPLOAD",
    "ipfs_upload": "IPFS_UPLOAD",
    "submit": "BLOCKCHAIN_SUBMIT",
    "blockchain_submit": "BLOCKCHAIN_SUBMIT",
    "task": "TASK_COMPLETE",
    "task_complete": "TASK_COMPLETE",
}

STATE_COLOURS = {
    "COMMITTED": "#2e7d32",
    "ROLLED_BACK": "#b26a00",
    "FAILED": "#c62828",
    "COMPENSATING": "#b26a00",
    "COMPENSATION_PENDING": "#b26a00",
}


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def format_age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    if seconds < 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    return f"{seconds // 86400} d {seconds % 86400 // 3600} h"


@dataclass
class TxRow:
    transaction_id: str
    round_id: int | None = None
    state: str = "PENDING"
    created_at: float | None = None  # wall time it started, when known
    duration_s: float | None = None  # how long a finished one took
    attempts: int = 0
    next_retry_at: float | None = None
    failed_step: str | None = None
    error_category: str | None = None
    error_message: str | None = None
    progress: dict[str, float] = field(default_factory=dict)
    history: list[str] = field(default_factory=list)

    @property
    def short_id(self) -> str:
        return self.transaction_id.removeprefix("mining_tx_")[:8]

    def age_text(self, now: float) -> str:
        if self.state in TERMINAL and self.duration_s is not None:
            return f"done in {format_age(self.duration_s)}"
        return "" if self.created_at is None else format_age(now - self.created_at)

    def progress_text(self) -> str:
        """e.g. "train ✓ · upload 40% · submit · task" (✓ done, % in progress, bare = not yet)."""
        parts = []
        for step in STEPS:
            label = STEP_LABELS[step]
            frac = self.progress.get(step)
            if frac is None:
                parts.append(label)
            elif frac >= 1.0:
                parts.append(f"{label} ✓")
            else:
                parts.append(f"{label} {int(frac * 100)}%")
        return " · ".join(parts)

    def state_text(self) -> str:
        if self.state in TERMINAL:
            return self.state
        return f"{self.state} — {self.progress_text()}"


def row_from_status(status: Any) -> TxRow:
    """Build a row from the coordinator's status record (dict or object, seeds' keys)."""
    tx_id = str(_get(status, "transaction_id") or _get(status, "id"))
    age = _get(status, "age_seconds")
    state = str(_get(status, "state", "PENDING")).upper()
    created = _get(status, "created_at")
    duration = None
    if state in TERMINAL:  # the journal's age of a finished transaction is its duration
        duration = None if age is None else float(age)
    elif created is None and age is not None:
        created = time.time() - float(age)
    row = TxRow(
        transaction_id=tx_id,
        round_id=_get(status, "round_id"),
        state=state,
        created_at=None if created is None else float(created),
        duration_s=duration,
        attempts=int(_get(status, "attempts", 0) or 0),
        next_retry_at=_get(status, "next_retry_at"),
        failed_step=upper_or_none(_get(status, "failed_step")),
        error_category=_get(status, "error_category"),
        error_message=_get(status, "error_message"),
    )
    progress = _get(status, "progress") or {}
    for step, frac in dict(progress).items():
        key = PROGRESS_STEP.get(str(step).lower(), str(step).upper())
        if frac is False:
            continue  # the journal's "not done" (bool) says nothing about a fraction
        try:
            row.progress[key] = float(frac)
        except (TypeError, ValueError):
            continue
    if row.state in STEPS:
        row.progress.setdefault(row.state, 0.0)
    for item in _get(status, "history", None) or _get(status, "events", None) or []:
        row.history.append(describe_history_item(item))
    return row


def upper_or_none(value: Any) -> str | None:
    return None if value is None else str(value).upper()


def describe_history_item(item: Any) -> str:
    """One line of a transaction's event history, whatever shape the journal returns."""
    if isinstance(item, str):
        return item
    ts = _get(item, "ts") or _get(item, "at") or _get(item, "timestamp")
    prefix = time.strftime("%H:%M:%S", time.localtime(float(ts))) + " " if ts else ""
    if isinstance(item, Event):
        return prefix + describe_event(item)
    kind = _get(item, "kind") or _get(item, "event") or ""
    if kind == "transition":
        old = upper_or_none(_get(item, "old_state")) or "—"
        text = f"{old} → {upper_or_none(_get(item, 'new_state'))}"
        if _get(item, "message"):
            text += f" ({_get(item, 'message')})"
        return prefix + text
    if kind == "retry":
        return prefix + (
            f"retry {_get(item, 'step', '')} #{_get(item, 'attempt', '?')} in "
            f"{float(_get(item, 'delay', 0.0) or 0.0):.1f} s "
            f"({_get(item, 'category', '')}: {_get(item, 'message', '')})"
        )
    rest = {k: v for k, v in dict(item).items() if k not in {"ts", "at", "timestamp", "kind"}}
    detail = ", ".join(f"{k}={v}" for k, v in rest.items() if v is not None)
    return f"{prefix}{kind} {detail}".strip()


def describe_event(event: Event) -> str:
    if isinstance(event, TransactionStateChanged):
        text = f"{upper_or_none(event.old_state) or '—'} → {str(event.new_state).upper()}"
        if event.error_message:
            text += f" ({event.failed_step or ''}: {event.error_message})"
        return text
    if isinstance(event, RetryScheduled):
        return (
            f"retry {event.operation} #{event.attempt} in {event.delay:.1f} s "
            f"({event.category}: {event.message})"
        )
    if isinstance(event, CompensationDone):
        return f"compensated: {undo_text(event.action, event.target)}"
    if isinstance(event, CompensationFailed):
        return f"compensation failed: {undo_text(event.action, event.target)} ({event.message})"
    return event.kind


def shown_fields(row: TxRow) -> tuple[Any, ...]:
    """What the table shows of a row (to skip signals when a poll changes nothing)."""
    return (
        row.round_id,
        row.state,
        row.attempts,
        row.next_retry_at,
        row.failed_step,
        row.error_category,
        row.error_message,
        tuple(sorted(row.progress.items())),
        row.created_at,
        row.duration_s,
    )


def stamp(event: Event) -> str:
    return time.strftime("%H:%M:%S ", time.localtime(event.ts))
