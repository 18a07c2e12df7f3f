"""Closing one transaction that must not stay open (stale, or force-cleaned by the user).

Closing is a reconciliation, not a blind delete: what the chain already holds is committed
(never unpinned), a pending undo is retried, and everything else fails with the reason and
gets its pin undone. Used by the periodic sweeper, the one-click cleanup and force cleanup.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from r3mes_desktop.core.errors import AlreadySubmittedError, R3mesError
from r3mes_desktop.core.events import Notice
from r3mes_desktop.core.records import TransactionRecord
from r3mes_desktop.core.saga.engine import Saga
from r3mes_desktop.core.txstate import TxState

log = logging.getLogger(__name__)


async def close_transaction(saga: Saga, rec: TransactionRecord, *, reason: str) -> dict[str, Any]:
    """Bring `rec` (nobody is driving it) to a terminal state or as close as possible."""
    now = saga.ctx.clock.time()
    entry: dict[str, Any] = {
        "transaction_id": rec.id,
        "round_id": rec.round_id,
        "old_state": rec.state.value,
        "age_seconds": round(now - rec.created_at, 3),
        "reason": reason,
        "unpinned": [],
    }
    if rec.state is TxState.BLOCKCHAIN_SUBMIT and rec.signed_raw is not None:
        try:
            found, block = await saga.settlement.find_on_chain(rec)
        except AlreadySubmittedError:
            found, block = False, None
        except R3mesError as exc:
            entry["new_state"] = rec.state.value
            entry["action"] = f"left open: the chain could not be asked ({exc.message})"
            return entry
        if found:
            rec = await saga.commit(
                rec, saga.settlement.submitted(rec, block, f"found on chain ({reason})")
            )
            rec = await saga.drive(rec, resumed=True)
            entry["new_state"] = rec.state.value
            entry["action"] = "found on chain: committed, task completion queued"
            return entry
        # Not mined yet is not "never mined": send the same bytes once more and let the chain
        # settle it (mined → committed; refused → undone; no answer → left in doubt).
        rec = await saga.drive(rec, resumed=True)
        entry["new_state"] = rec.state.value
        entry["action"] = {
            TxState.COMMITTED: "sent again and mined: committed",
            TxState.TASK_COMPLETE: "sent again and mined: task completion queued",
            TxState.BLOCKCHAIN_SUBMIT: "left open: the chain has not settled the submission",
        }.get(rec.state, f"the chain refused the submission: {rec.state.value}")
        log.info("closed %s: %s -> %s (%s)", rec.id, entry["old_state"], rec.state.value, reason)
        return entry
    if rec.state is TxState.TASK_COMPLETE:
        rec = await saga.drive(rec, resumed=True)
        entry["action"] = "committed, task completion queued"
    elif rec.state is TxState.COMPENSATING:
        before = [c.target for c in await saga.ctx.journal.compensations(tx_id=rec.id)]
        rec = await saga.compensator.run(rec)
        after = {c.target for c in await saga.ctx.journal.compensations(tx_id=rec.id)}
        entry["unpinned"] = [cid for cid in before if cid not in after]
        entry["action"] = "retried pending undo actions"
    else:
        rec = await saga.fail(rec, None, message=reason)
        if rec.cid is not None and rec.state is TxState.ROLLED_BACK:
            entry["unpinned"] = [rec.cid]
        entry["action"] = {
            TxState.FAILED: "closed as failed (nothing to undo)",
            TxState.ROLLED_BACK: "rolled back",
            TxState.COMPENSATING: "undo pending: unpin failed, will be retried",
        }.get(rec.state, "closed")
    entry["new_state"] = rec.state.value
    log.info("closed %s: %s -> %s (%s)", rec.id, entry["old_state"], rec.state.value, reason)
    return entry


async def stop_training(saga: Saga, rec: TransactionRecord, *, reason: str) -> None:
    """End a transaction whose round can no longer take its work (closed on chain): FAILED
    with `reason`, no dead letter, its checkpoints dropped, a notice for the user. The
    caller has stopped whoever was driving it."""
    await close_transaction(saga, rec, reason=reason)
    with contextlib.suppress(Exception):  # the checkpoint of a closed round is useless
        await saga.ctx.trainer.discard_checkpoints(rec.id)
    log.warning("transaction %s: %s; training stopped", rec.id, reason)
    saga.ctx.bus.publish(
        Notice(
            level="warning",
            message=f"{reason}: its training was stopped",
            transaction_id=rec.id,
            source="miner",
            ts=saga.ctx.clock.time(),
        )
    )
