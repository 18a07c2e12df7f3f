"""What recovery at start does with each unfinished transaction, in words.

The actions themselves are the saga's resumed steps (each asks the world before acting
again); this module only names the decision for the RecoveryReport and the log.
"""

from __future__ import annotations

from typing import Any

from r3mes_desktop.core.records import TransactionRecord
from r3mes_desktop.core.txstate import BEFORE_UPLOAD, TxState

_ACTIONS: dict[TxState, str] = {
    TxState.PENDING: "start: fetch the round's files, or train",
    TxState.FETCH: "fetch the model version and dataset again (verified; cached files re-hashed)",
    TxState.TRAINING: "resume training from the trainer's checkpoint",
    TxState.IPFS_UPLOAD: "check the pin (re-add the journaled gradient if needed), continue",
    TxState.BLOCKCHAIN_SUBMIT: (
        "look up the receipt and the on-chain submission; continue, or re-broadcast the "
        "journaled signed bytes, or compensate"
    ),
    TxState.TASK_COMPLETE: "commit; the outbox delivers the task completion",
    TxState.COMPENSATING: "retry the pending undo actions",
}


def recovery_action(rec: TransactionRecord, *, now: float) -> dict[str, Any]:
    expired = rec.deadline is not None and now >= rec.deadline
    action = _ACTIONS.get(rec.state, "none")
    if rec.state is TxState.TRAINING and rec.fetched:
        action += ", on the files FETCH journaled (hashed again; fetched again if evicted)"
    if expired and (rec.state in BEFORE_UPLOAD or rec.state is TxState.IPFS_UPLOAD):
        action = "past its deadline: fail and undo"
    elif expired and rec.state is TxState.BLOCKCHAIN_SUBMIT:
        action = "past its deadline: the chain settles it (sent again)"
    return {
        "transaction_id": rec.id,
        "round_id": rec.round_id,
        "state": rec.state.value,
        "age_seconds": round(now - rec.created_at, 3),
        "action": action,
    }
