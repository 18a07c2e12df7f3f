"""One transaction as the table shows it, built from journal records and core events.

No Qt here: `TxRow` and the sentences about a transaction's history are plain data and
text, used by the table model, the details panel and their tests.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from r3mes_desktop.core.events import (
    CompensationDone,
    CompensationFailed,
    Event,
    RetryScheduled,
    TransactionStateChanged,
    VerdictRecorded,
)
from r3mes_desktop.core.txstate import STEPS, TERMINAL, TxState
from r3mes_desktop.support.alerts import undo_text

if TYPE_CHECKING:
    from r3mes_desktop.core.records import TransactionStatus

STEP_LABELS = {
    TxState.FETCH: "fetch",
    TxState.TRAINING: "train",
    TxState.IPFS_UPLOAD: "upload",
    TxState.BLOCKCHAIN_SUBMIT: "submit",
    TxState.TASK_COMPLETE: "task",
}
TERMINAL_STATES = TERMINAL

# StepProgress.step names used by the adapters, mapped onto saga steps.
PROGRESS_STEP = {
    "fetch": TxState.FETCH,
    "training": TxState.TRAINING,
    "train": TxState.TRAINING,
    "pow": TxState.TRAINING,
    "upload": TxState.IPFS_UPLOAD,
    "ipfs_upload": TxState.IPFS_UPLOAD,
    "submit": TxState.BLOCKCHAIN_SUBMIT,
    "blockchain_submit": TxState.BLOCKCHAIN_SUBMIT,
    "task": TxState.TASK_COMPLETE,
    "task_complete": TxState.TASK_COMPLETE,
}

VERDICT_COLOURS = {
    "accepted": "#2e7d32",
    "rejected": "#c62828",
    "overdue": "#b26a00",
    "awaiting": "#757575",
}

STATE_COLOURS = {
    TxState.COMMITTED: "#2e7d32",
    TxState.ROLLED_BACK: "#b26a00",
    TxState.FAILED: "#c62828",
    TxState.COMPENSATING: "#b26a00",
}


def state_label(state: str | None) -> str:
    """How the window names a state or step: the TxState's name ("IPFS_UPLOAD"); a value
    that is no TxState (a failed step such as "timeout") as the core wrote it."""
    if state is None:
        return "—"
    return TxState(state).name if state in _VALUES else state


_VALUES = frozenset(s.value for s in TxState)


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
    state: TxState = TxState.PENDING
    created_at: float | None = None  # wall time it started, when known
    duration_s: float | None = None  # how long a finished one took
    attempts: int = 0
    next_retry_at: float | None = None
    failed_step: str | None = None
    error_category: str | None = None
    error_message: str | None = None
    progress: dict[TxState, float] = field(default_factory=dict)
    history: list[str] = field(default_factory=list)
    # what the validators said (TransactionStatus.verdict): None until committed
    verdict: str | None = None  # "accepted" | "rejected" | "awaiting" | "overdue"
    verdict_reason: str | None = None  # the reason's text
    credits: int | None = None
    verdict_validator: str | None = None
    # the network model (TransactionStatus): the version the round trained on, and what
    # became of the update ("went into version 4", "not aggregated: ...")
    model_version: int | None = None
    aggregated_into: int | None = None
    aggregation_text: str | None = None
    # what FETCH verified (TransactionStatus.fetched): kind → {"cid", "sha256", "path"}
    fetched: dict[str, dict[str, str]] | None = None

    @property
    def short_id(self) -> str:
        return self.transaction_id.removeprefix("mining_tx_")[:8]

    def age_text(self, now: float) -> str:
        if self.state in TERMINAL and self.duration_s is not None:
            return f"done in {format_age(self.duration_s)}"
        return "" if self.created_at is None else format_age(now - self.created_at)

    def progress_text(self) -> str:
        """e.g. "train ✓ · upload 40% · submit · task" (✓ done, % in progress, bare = not yet).
        FETCH is shown only for a round that fetches (a row that has its progress)."""
        parts = []
        for step in STEPS:
            if step is TxState.FETCH and step not in self.progress:
                continue
            label = STEP_LABELS[step]
            frac = self.progress.get(step)
            if frac is None:
                parts.append(label)
            elif frac >= 1.0:
                parts.append(f"{label} ✓")
            else:
                parts.append(f"{label} {int(frac * 100)}%")
        return " · ".join(parts)

    def verdict_text(self) -> str:
        """e.g. "accepted +100", "rejected", "awaiting", "overdue"; "" before the commit."""
        if self.verdict == "accepted":
            return f"accepted +{self.credits or 0}"
        return self.verdict or ""

    def state_text(self) -> str:
        if self.state in TERMINAL:
            return self.state.name
        return f"{self.state.name} — {self.progress_text()}"


def row_from_status(status: TransactionStatus) -> TxRow:
    """Build a row from the coordinator's status record."""
    state = TxState(status.state)
    created = None
    duration = None
    if state in TERMINAL:  # the journal's age of a finished transaction is its duration
        duration = status.age_seconds
    else:
        created = time.time() - status.age_seconds
    row = TxRow(
        transaction_id=status.transaction_id,
        round_id=status.round_id,
        state=state,
        created_at=created,
        duration_s=duration,
        attempts=status.attempts,
        next_retry_at=status.next_retry_at,
        failed_step=status.failed_step,
        error_category=status.error_category,
        error_message=status.error_message,
        verdict=status.verdict,
        verdict_reason=status.verdict_reason_text,
        credits=status.credits,
        verdict_validator=status.verdict_validator,
        model_version=status.model_version,
        aggregated_into=status.aggregated_into,
        aggregation_text=status.aggregation_text,
        fetched=status.fetched,
    )
    fetches = status.fetched is not None or state is TxState.FETCH or status.failed_step == "fetch"
    for step, done in status.progress.items():
        if step == TxState.FETCH.value and not fetches:
            continue  # nothing to fetch: the step is not shown at all
        if done:  # the journal says which steps are done, not how far the others are
            row.progress[TxState(step)] = 1.0
    if row.state in STEPS:
        row.progress.setdefault(row.state, 0.0)
    row.history.extend(describe_history_item(item) for item in status.history)
    return row


def describe_history_item(item: Mapping[str, Any]) -> str:
    """One line of a transaction's journal history (a `HistoryEntry.to_dict()`)."""
    prefix = time.strftime("%H:%M:%S ", time.localtime(float(item["ts"])))
    kind = item["kind"]
    if kind == "transition":
        text = f"{state_label(item.get('old_state'))} → {state_label(item.get('new_state'))}"
        if item.get("message"):
            text += f" ({item['message']})"
        return prefix + text
    if kind == "verdict":
        return f"{prefix}verdict {item.get('message', '')}".rstrip()
    if kind == "retry":
        return prefix + (
            f"retry {item.get('step', '')} #{item.get('attempt', '?')} in "
            f"{float(item.get('delay') or 0.0):.1f} s "
            f"({item.get('category', '')}: {item.get('message', '')})"
        )
    rest = {k: v for k, v in item.items() if k not in {"ts", "kind", "transaction_id"}}
    detail = ", ".join(f"{k}={v}" for k, v in rest.items())
    return f"{prefix}{kind} {detail}".strip()


def describe_event(event: Event) -> str:
    if isinstance(event, TransactionStateChanged):
        text = f"{state_label(event.old_state)} → {state_label(event.new_state)}"
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
    if isinstance(event, VerdictRecorded):
        if event.verdict == "accepted":
            return f"verdict accepted: +{event.credits} credits"
        return f"verdict rejected: {event.reason_text}"
    return event.kind


def shown_fields(row: TxRow) -> tuple[Any, ...]:
    """What the table and the details panel show of a row (to skip signals when a poll
    changes nothing)."""
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
        row.verdict,
        row.verdict_reason,
        row.credits,
        row.model_version,
        row.aggregation_text,
        None if row.fetched is None else tuple(sorted(row.fetched)),
    )


def stamp(event: Event) -> str:
    return time.strftime("%H:%M:%S ", time.localtime(event.ts))
