"""Putting a failed or rolled-back transaction back on its road (dead-letter retry,
resume), and what a resume can continue."""

from __future__ import annotations

from typing import Any

from r3mes_desktop.core.errors import ValidationError
from r3mes_desktop.core.journal import Change, Journal
from r3mes_desktop.core.records import HistoryEntry, TransactionRecord
from r3mes_desktop.core.saga.engine import Saga
from r3mes_desktop.core.saga.fetching import first_step
from r3mes_desktop.core.txstate import TxState


async def reopen(
    saga: Saga, rec: TransactionRecord, *, note: str, timeout_s: float
) -> TransactionRecord:
    """Move `rec` to the first step not durably done, with a fresh deadline: the signed
    submission if there is one (its bytes are sent again, or signed again if the chain
    proves them void), else the journaled gradient's upload, else FETCH for a round that
    names files (verified again) or training."""
    journal = saga.ctx.journal
    if rec.state not in (TxState.FAILED, TxState.ROLLED_BACK):
        raise ValidationError(
            f"transaction {rec.id} is {rec.state.value}; only failed or rolled back "
            "transactions can be retried"
        )
    owner = await journal.submission_owner(rec.round_id, rec.miner)
    if owner is not None and owner != rec.id:
        raise ValidationError(
            f"round {rec.round_id} already has a submission signed by transaction "
            f"{owner}; retry that one instead of {rec.id}"
        )
    if rec.signed_raw is not None:
        target = TxState.BLOCKCHAIN_SUBMIT
    elif rec.gradient_hash and await journal.has_gradient(rec):
        target = TxState.IPFS_UPLOAD
    else:
        target = first_step(rec.spec)
    now = saga.ctx.clock.time()
    change = Change(
        rec.id,
        now,
        state=target,
        expect=frozenset({rec.state}),
        fields={
            "attempts": rec.attempts + 1,
            "deadline": now + timeout_s,
            "failed_step": None,
            "error_category": None,
            "error_message": None,
            "compensation": None,
            "next_retry_at": None,
        },
        history=[HistoryEntry(rec.id, now, "note", message=note)],
    )
    return await saga.commit(rec, change)


async def resumable(journal: Journal, *, running: set[str], now: float) -> list[dict[str, Any]]:
    """Unfinished transactions nobody drives, and those failed in training (their
    checkpoint kept): what `Coordinator.resume` can continue."""
    items = []
    failed = await journal.list_transactions(states=[TxState.FAILED], limit=1000)
    for rec in [*await journal.unfinished(), *failed]:
        if rec.id in running or rec.state is TxState.COMPENSATING:
            continue
        if rec.state is TxState.FAILED and rec.failed_step not in (None, "training", "pending"):
            continue
        items.append(
            {
                "transaction_id": rec.id,
                "round_id": rec.round_id,
                "state": rec.state.value,
                "step": rec.training_step,
                "age_seconds": round(now - rec.created_at, 3),
            }
        )
    return items
