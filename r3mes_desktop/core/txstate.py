"""The mining transaction's states and the order of its steps.

Kept apart from the journal and the saga so the GUI, the API and the statistics can name
states without importing either.
"""

from __future__ import annotations

from enum import StrEnum


class TxState(StrEnum):
    PENDING = "pending"
    FETCH = "fetch"  # the round's model version and dataset fetched, verified, journaled
    TRAINING = "training"  # training, then proof of work: the one device-bound lane
    IPFS_UPLOAD = "ipfs_upload"
    BLOCKCHAIN_SUBMIT = "blockchain_submit"
    TASK_COMPLETE = "task_complete"
    COMMITTED = "committed"
    COMPENSATING = "compensating"  # failed, and an undo (unpin) has not succeeded yet
    FAILED = "failed"  # failed with nothing to undo (training)
    ROLLED_BACK = "rolled_back"  # failed and every undo succeeded


TERMINAL: frozenset[TxState] = frozenset({TxState.COMMITTED, TxState.FAILED, TxState.ROLLED_BACK})
NON_TERMINAL: frozenset[TxState] = frozenset(set(TxState) - TERMINAL)

STEPS: tuple[TxState, ...] = (
    TxState.FETCH,
    TxState.TRAINING,
    TxState.IPFS_UPLOAD,
    TxState.BLOCKCHAIN_SUBMIT,
    TxState.TASK_COMPLETE,
)
"""The saga's steps in order; `progress` in a status reports which of them are done. A round
on the base model names nothing to fetch: its transaction starts in TRAINING, and FETCH
counts as done once it is past PENDING."""

BEFORE_UPLOAD: frozenset[TxState] = frozenset({TxState.PENDING, TxState.FETCH, TxState.TRAINING})
"""States with nothing outside this machine to undo: a failure there ends FAILED."""


def step_done(step: TxState, state: TxState, failed_step: str | None) -> bool:
    """Whether `step` has completed for a transaction now in `state`."""
    if state is TxState.COMMITTED:
        return True
    if state in (TxState.FAILED, TxState.ROLLED_BACK, TxState.COMPENSATING):
        if failed_step is None or failed_step not in {s.value for s in STEPS}:
            return False
        return STEPS.index(step) < STEPS.index(TxState(failed_step))
    if state is TxState.PENDING:
        return False
    return STEPS.index(step) < STEPS.index(state)
