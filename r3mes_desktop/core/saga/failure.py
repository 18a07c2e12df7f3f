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
from r3mes_desktop.core.txstate import TxState

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
        cid = rec.cid or self.scratch.learned_cid.get(rec.id)
        # Any failure in IPFS_UPLOAD may follow an add that pinned but never answered (a
        # timeout on an earlier attempt, then a 401 on the retry): learn the CID so the undo
        # unpins it, whatever the last error says.
        maybe_pinned = (
            rec.gradient_hash is not None and rec.id not in self.scratch.adds_without_effect
        )
        others_pin = bool(rec.pinned_before)  # pinned before our first add: not ours to undo
        if rec.state is TxState.IPFS_UPLOAD and not maybe_pinned:
            cid = None  # every add of ours certainly changed nothing
        if cid is None and rec.state is TxState.IPFS_UPLOAD and maybe_pinned and not others_pin:
            cid = await self._learn_cid(rec)
        now = self.ctx.clock.time()
        comps: list[tuple[str, str]] = []
        history: list[HistoryEntry] = []
        if others_pin:
            if rec.state not in (TxState.PENDING, TxState.TRAINING) and rec.cid is not None:
                history.append(
                    HistoryEntry(
                        rec.id,
                        now,
                        "note",
                        message=f"{rec.cid} was pinned before this transaction: left pinned",
                    )
                )
        elif rec.state not in (TxState.PENDING, TxState.TRAINING) and cid is not None:
            comps.append(("unpin", cid))
        elif rec.state is TxState.IPFS_UPLOAD and maybe_pinned:
            # Not even the re-add answered (the ipfs breaker open): the undo learns the CID
            # later, then unpins; until then the transaction stays COMPENSATING, so no pin
            # is left orphaned behind a ROLLED_BACK.
            assert rec.gradient_hash is not None
            comps.append(("unpin_upload", rec.gradient_hash))
        if rec.state in (TxState.PENDING, TxState.TRAINING):
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
        dead: tuple[str, str, dict[str, Any]] | None = None
        if error is not None and error.category in DEAD_LETTER_CATEGORIES:
            dead = (
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
        change = Change(
            rec.id,
            now,
            state=new_state,
            expect=frozenset({rec.state}),
            fields=fields,
            compensations_add=comps,
            dead_letter=dead,
            history=history,
        )
        log.warning("transaction %s failed in %s: %s", rec.id, step.value, text)
        if rec.state is TxState.TRAINING:  # a gradient written too late is not journaled
            await artifacts.remove(self.saga.gradient_path(rec.id))
        rec = await self.saga.commit(rec, change)
        if rec.state is TxState.COMPENSATING:
            rec = await self.saga.compensator.run(rec)
        return rec
