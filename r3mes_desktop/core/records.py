"""Plain records read from the journal and handed to the GUI, CLI and API.

They are frozen snapshots: changing one changes nothing; the journal is the source of truth.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from r3mes_desktop.core.steps import RoundSpec
from r3mes_desktop.core.txstate import STEPS, TxState, step_done
from r3mes_desktop.core.workproof import reason_text


def spec_to_json(spec: RoundSpec) -> str:
    return json.dumps(
        {
            "round_id": spec.round_id,
            "seed": spec.seed,
            "difficulty": spec.difficulty,
            "base_model_id": spec.base_model_id,
            "steps": spec.steps,
            "hyperparams": dict(spec.hyperparams),
            "deadline": spec.deadline,
            "reward": spec.reward,
            "model_version": spec.model_version,
            "model_cid": spec.model_cid,
            "model_sha256": spec.model_sha256,
        },
        sort_keys=True,
    )


def spec_from_json(text: str) -> RoundSpec:
    data = json.loads(text)
    return RoundSpec(
        round_id=int(data["round_id"]),
        seed=int(data["seed"]),
        difficulty=int(data["difficulty"]),
        base_model_id=str(data["base_model_id"]),
        steps=int(data["steps"]),
        hyperparams=dict(data.get("hyperparams") or {}),
        deadline=int(data.get("deadline", 0)),
        reward=int(data.get("reward", 0)),
        model_version=int(data.get("model_version", 0)),
        model_cid=str(data.get("model_cid", "")),
        model_sha256=str(data.get("model_sha256", "")),
    )


@dataclass(frozen=True)
class TransactionRecord:
    """One row of the `transactions` table: the transaction's state and its artifacts."""

    id: str
    round_id: int
    miner: str
    state: TxState
    spec: RoundSpec
    created_at: float
    updated_at: float
    deadline: float | None
    finished_at: float | None = None
    attempts: int = 0
    next_retry_at: float | None = None
    failed_step: str | None = None
    error_category: str | None = None
    error_message: str | None = None
    gradient_hash: str | None = None  # hex
    gradient_path: str | None = None
    pow_nonce: int | None = None
    cid: str | None = None
    signed_raw: bytes | None = None
    tx_hash: str | None = None
    account_nonce: int | None = None
    receipt_block: int | None = None
    compensation: str | None = None  # None | "pending" | "done"
    training_step: int | None = None
    pinned_before: bool | None = None  # the store held the CID before our first add
    # What the chain's validators said of the committed submission (read, never decided here)
    verdict: str | None = None  # None (none yet) | "accepted" | "rejected"
    verdict_reason: int | None = None  # the contract's reason code (core.workproof.Reason)
    credits: int | None = None  # what the verdict credited: the round's reward, or 0
    verdict_block: int | None = None  # the chain's head when it was read (posted at or before)
    verdict_validator: str | None = None
    verdict_at: float | None = None  # when the verdict was read and journaled
    verdict_overdue_at: float | None = None  # when "no verdict after N blocks" was raised
    # What FETCH verified and journaled: {"adapter": {"cid", "sha256", "path"}, "dataset":
    # {...}}; None before FETCH, or for a round that names nothing to fetch
    fetched: dict[str, dict[str, str]] | None = None


@dataclass(frozen=True)
class HistoryEntry:
    """One event in a transaction's history: transition, retry, compensation, note."""

    transaction_id: str
    ts: float
    # "transition" | "retry" | "error" | "compensation" | "compensation_failed" | "note" |
    # "verdict" (a validator's verdict read from chain)
    kind: str
    old_state: str | None = None
    new_state: str | None = None
    step: str | None = None
    attempt: int | None = None
    delay: float | None = None
    category: str | None = None
    message: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            name: value for name in _HISTORY_FIELDS if (value := getattr(self, name)) is not None
        }


_HISTORY_FIELDS = tuple(f.name for f in dataclasses.fields(HistoryEntry))


@dataclass(frozen=True)
class CompensationRow:
    id: int
    transaction_id: str
    action: str  # "unpin" (target: CID) or "unpin_upload" (target: gradient hash)
    target: str
    status: str  # "pending" | "done"
    attempts: int
    next_attempt_at: float
    last_error: str | None


@dataclass(frozen=True)
class OutboxRow:
    transaction_id: str
    round_id: int
    attempts: int
    next_attempt_at: float
    last_error: str | None
    done_at: float | None


@dataclass(frozen=True)
class DeadLetter:
    id: str
    transaction_id: str
    round_id: int
    created_at: float
    reason: str
    category: str
    payload: dict[str, Any]  # references only: gradient path, hash, CID, tx hash
    status: str  # "open" | "retried" | "discarded" | "superseded"
    resolved_at: float | None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ModelVersion:
    """A network model version as the journal keeps it (read from the contract by
    `core.model_watch`): the adapter's CID and sha256, its held-out loss, the version it was
    trained from and the closed round whose accepted updates it averages."""

    version_id: int
    round_id: int
    parent_id: int
    eval_loss: float  # nats per token, on the network's held-out text
    updates: int
    cid: str
    content_hash: str  # sha256 hex of the adapter's bytes
    block_number: int
    aggregator: str
    seen_at: float  # when this miner read it

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


AGGREGATED, WAITING, PASSED_OVER, REJECTED = "aggregated", "waiting", "passed_over", "rejected"


def aggregation_of(
    record: TransactionRecord, successor: ModelVersion | None
) -> tuple[str | None, int | None, str | None]:
    """Whether a transaction's update went into the network model: (word, version, sentence).

    The contract builds version v+1 from exactly one closed round that trained on version
    v, from that round's accepted updates only; so an accepted update went into the version
    whose parent is the one it trained on (`successor`) if and only if that version names
    its round. None for all three before a final verdict.
    """
    trained_on = record.spec.model_version
    if record.verdict == "rejected":
        return REJECTED, None, "not aggregated: the validators rejected the update"
    if record.verdict != "accepted":
        return None, None, None
    if successor is None:
        return WAITING, None, f"not aggregated yet: no version built on version {trained_on} so far"
    if successor.round_id == record.round_id:
        return AGGREGATED, successor.version_id, f"went into version {successor.version_id}"
    return (
        PASSED_OVER,
        None,
        f"not aggregated: version {successor.version_id} was built from round "
        f"{successor.round_id} (one round per version)",
    )


def verdict_status(record: TransactionRecord) -> str | None:
    """What the chain said of a transaction's submission, in one word (see
    `TransactionStatus.verdict`); None before it is committed."""
    if record.verdict is not None:
        return record.verdict
    if record.state is not TxState.COMMITTED:
        return None
    return "overdue" if record.verdict_overdue_at is not None else "awaiting"


@dataclass(frozen=True)
class TransactionStatus:
    """A transaction as the seeds showed it, plus what our durable journal also knows."""

    transaction_id: str
    state: str
    age_seconds: float
    failed_step: str | None
    error_message: str | None
    progress: dict[str, bool]
    round_id: int
    attempts: int
    next_retry_at: float | None
    error_category: str | None
    cid: str | None = None
    tx_hash: str | None = None
    compensation: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    # "accepted" | "rejected" | "awaiting" (committed, no verdict yet) | "overdue" (awaiting
    # for more blocks than the setting allows) | None (not committed)
    verdict: str | None = None
    verdict_reason: int | None = None
    verdict_reason_text: str | None = None
    credits: int | None = None
    verdict_block: int | None = None
    verdict_validator: str | None = None
    verdict_at: float | None = None
    # The network model: the version the round trained on, and whether the update went
    # into the next one (`aggregation_of`: "aggregated" | "waiting" | "passed_over" |
    # "rejected" | None before a final verdict)
    model_version: int = 0
    aggregation: str | None = None
    aggregated_into: int | None = None
    aggregation_text: str | None = None
    # What FETCH verified and journaled ({"adapter": {"cid", "sha256", "path"}, "dataset":
    # {...}}); None for a round that names nothing to fetch, or before FETCH is done
    fetched: dict[str, dict[str, str]] | None = None

    @classmethod
    def of(
        cls,
        record: TransactionRecord,
        *,
        now: float,
        history: list[HistoryEntry],
        successor: ModelVersion | None = None,
    ) -> TransactionStatus:
        """`successor`: the journaled version built on the one `record` trained on (the
        version numbered one more), None while there is none."""
        end = record.finished_at if record.finished_at is not None else now
        aggregation, into, text = aggregation_of(record, successor)
        return cls(
            transaction_id=record.id,
            state=record.state.value,
            age_seconds=round(max(0.0, end - record.created_at), 3),
            failed_step=record.failed_step,
            error_message=record.error_message,
            progress={s.value: step_done(s, record.state, record.failed_step) for s in STEPS},
            round_id=record.round_id,
            attempts=record.attempts,
            next_retry_at=record.next_retry_at,
            error_category=record.error_category,
            cid=record.cid,
            tx_hash=record.tx_hash,
            compensation=record.compensation,
            history=[h.to_dict() for h in history],
            verdict=verdict_status(record),
            verdict_reason=record.verdict_reason,
            verdict_reason_text=(
                None if record.verdict_reason is None else reason_text(record.verdict_reason)
            ),
            credits=record.credits,
            verdict_block=record.verdict_block,
            verdict_validator=record.verdict_validator,
            verdict_at=record.verdict_at,
            model_version=record.spec.model_version,
            aggregation=aggregation,
            aggregated_into=into,
            aggregation_text=text,
            fetched=record.fetched,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class CleanupReport:
    """What a stale cleanup (or a force cleanup) did, transaction by transaction."""

    checked_at: float
    older_than_s: float
    cleaned: list[dict[str, Any]] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.cleaned)

    @property
    def transactions(self) -> list[str]:
        return [str(item["transaction_id"]) for item in self.cleaned]

    @property
    def actions(self) -> dict[str, int]:
        """How many transactions ended how ("rolled_back": 2, "committed": 1 ...)."""
        counts: dict[str, int] = {}
        for item in self.cleaned:
            key = str(item.get("new_state"))
            counts[key] = counts.get(key, 0) + 1
        return counts

    @property
    def unpinned(self) -> list[str]:
        return [cid for item in self.cleaned for cid in item.get("unpinned", [])]

    def to_dict(self) -> dict[str, Any]:
        return {
            "checked_at": self.checked_at,
            "older_than_s": self.older_than_s,
            "count": self.count,
            "actions": self.actions,
            "unpinned": self.unpinned,
            "cleaned": list(self.cleaned),
        }


@dataclass(frozen=True)
class RecoveryReport:
    """What recovery at start found and did for each unfinished transaction."""

    duration_s: float
    reconciled: list[dict[str, Any]] = field(default_factory=list)
    integrity_problems: list[str] = field(default_factory=list)
    strays_removed: int = 0  # gradient files a kill left behind, deleted at start
    letters_superseded: int = 0  # dead letters of rounds committed since, closed at start

    @property
    def count(self) -> int:
        return len(self.reconciled)

    def to_dict(self) -> dict[str, Any]:
        return {
            "duration_s": self.duration_s,
            "count": self.count,
            "reconciled": list(self.reconciled),
            "integrity_problems": list(self.integrity_problems),
            "strays_removed": self.strays_removed,
            "letters_superseded": self.letters_superseded,
        }
