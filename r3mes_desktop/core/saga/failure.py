"""Failing a transaction: record the failure, register its undo actions, run them.

An undo removes only what its own transaction added (docs/coordinator.md): a CID pinned
before our first add registers no unpin, and an upload whose every add certainly changed
nothing registers none either.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any

from r3mes_desktop.core import artifacts
from r3mes_desktop.core.errors import R3mesError
from r3mes_desktop.core.journal import Change
from r3mes_desktop.core.records import HistoryEntry, TransactionRecord
from r3mes_desktop.core.resilience.retry import RetryPolicy
from r3mes_desktop.core.saga.context import DEAD_LETTER_CATEGORIES, SagaContext, Scratch
from r3mes_desktop.core.txstate import BEFORE_UPLOAD, TxState

if TYPE_CHECKING:
    from r3mes_desktop.core.saga.engine import Saga

log = logging.getLogger(__name__)


class Failure:
    def __init__(self, saga: Saga) -> None:
        self.saga = saga
        self.ctx: SagaContext = saga.ctx
        self.scratch: Scratch = saga.scratch

    async def upload_cid(self, rec: TransactionRecord) -> str:
        """The CID an interrupted upload may have pinned: re-adding the journaled bytes is
        idempotent and names it, so the undo can unpin it (no orphan pins). One try."""
        data = await self.ctx.journal.gradient(rec)
        once = self.ctx.store_calls.with_options(policy=RetryPolicy(max_retries=0))
        cid: str = await once.call(
            "add_and_pin",
            functools.partial(self.ctx.store.add_and_pin, data),
            transaction_id=rec.id,
        )
        return cid

    async def _learn_cid(self, rec: TransactionRecord) -> str | None:
        try:
            return await self.upload_cid(rec)
        except Exception as exc:
            log.warning("could not learn the CID of %s to undo its upload: %s", rec.id, exc)
            return None

    async def fail(
        self,
        rec: TransactionRecord,
        error: R3mesError | None,
        *,
        step: TxState | None = None,
        message: str | None = None,
    ) -> TransactionRecord:
        """Record the failure, register the undo actions and run them (reverse order).

        `error=None` is a cleanup by reason (`message`): no category, no dead letter.
        """
        step = step or rec.state
        now = self.ctx.clock.time()
        cid, comps, history = await self._undo_plan(rec, now)
        if rec.state in BEFORE_UPLOAD:  # nothing outside this machine to undo
            new_state = TxState.FAILED
        else:
            new_state = TxState.COMPENSATING if comps else TxState.ROLLED_BACK
        text = (message or "cleaned up") if error is None else error.message
        fields: dict[str, Any] = {
            "failed_step": step.value,
            "error_category": None if error is None else str(error.category),
            "error_message": text,
            "compensation": "pending" if comps else None,
            "next_retry_at": None,
        }
        if rec.cid is None and cid is not None:
            fields["cid"] = cid
        if rec.id in self.scratch.training_step:
            fields["training_step"] = self.scratch.training_step[rec.id]
        change = Change(
            rec.id,
            now,
            state=new_state,
            expect=frozenset({rec.state}),
            fields=fields,
            compensations_add=comps,
            dead_letter=_dead_letter(rec, error, text, cid, step),
            history=history,
        )
        log.warning("transaction %s failed in %s: %s", rec.id, step.value, text)
        if rec.state is TxState.TRAINING:  # a gradient written too late is not journaled
            await artifacts.remove(self.saga.gradient_path(rec.id))
        rec = await self.saga.commit(rec, change)
        if rec.state is TxState.COMPENSATING:
            rec = await self.saga.compensator.run(rec)
        return rec

    async def _undo_plan(
        self, rec: TransactionRecord, now: float
    ) -> tuple[str | None, list[tuple[str, str]], list[HistoryEntry]]:
        """The CID to record, the undo actions to register, and history notes.

        An undo removes only what this transaction added: nothing when the store pinned the
        CID before our first add, nothing when every add of ours certainly changed nothing.
        Any other failure in IPFS_UPLOAD may follow an add that pinned but never answered
        (a timeout on an earlier attempt, then a 401 on the retry): the CID is learned so
        the undo unpins it, whatever the last error says.
        """
        cid = rec.cid or self.scratch.learned_cid.get(rec.id)
        maybe_pinned = (
            rec.gradient_hash is not None and rec.id not in self.scratch.adds_without_effect
        )
        uploading = rec.state is TxState.IPFS_UPLOAD
        before_upload = rec.state in BEFORE_UPLOAD
        if rec.pinned_before:
            if before_upload or rec.cid is None:
                return cid, [], []
            note = f"{rec.cid} was pinned before this transaction: left pinned"
            return cid, [], [HistoryEntry(rec.id, now, "note", message=note)]
        if uploading and not maybe_pinned:
            return None, [], []
        if cid is None and uploading:
            cid = await self._learn_cid(rec)
        if not before_upload and cid is not None:
            return cid, [("unpin", cid)], []
        if uploading:
            # Not even the re-add answered (the ipfs breaker open): the undo learns the CID
            # later, then unpins; until then the transaction stays COMPENSATING, so no pin
            # is left orphaned behind a ROLLED_BACK.
            assert rec.gradient_hash is not None
            return cid, [("unpin_upload", rec.gradient_hash)], []
        return cid, [], []


def _dead_letter(
    rec: TransactionRecord, error: R3mesError | None, text: str, cid: str | None, step: TxState
) -> tuple[str, str, dict[str, Any]] | None:
    """A final failure worth a person's retry (see DEAD_LETTER_CATEGORIES), with what a
    retry needs to know; None for the rest and for cleanups by reason."""
    if error is None or error.category not in DEAD_LETTER_CATEGORIES:
        return None
    return (
        text,
        str(error.category),
        {
            "gradient_path": rec.gradient_path,
            "gradient_hash": rec.gradient_hash,
            "cid": cid,
            "tx_hash": rec.tx_hash,
            "failed_step": step.value,
        },
    )
