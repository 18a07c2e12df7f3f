"""Undo actions of failed transactions, run in reverse order and retried until they succeed.

A failing undo never hides the original error: the transaction keeps its failed step,
category and message, stays visibly COMPENSATING (never ROLLED_BACK) and the failure is
recorded on the compensation row and in the history. A background task retries due rows.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from r3mes_desktop.core.errors import R3mesError, to_r3mes_error
from r3mes_desktop.core.events import CompensationDone, CompensationFailed
from r3mes_desktop.core.journal import Change
from r3mes_desktop.core.records import CompensationRow, HistoryEntry, TransactionRecord
from r3mes_desktop.core.txstate import TxState

if TYPE_CHECKING:
    from r3mes_desktop.core.saga.engine import Saga

log = logging.getLogger(__name__)


class Compensator:
    def __init__(self, saga: Saga) -> None:
        self.saga = saga
        self.backoff = saga.ctx.undo_backoff

    def _delay(self, attempts: int) -> float:
        return self.backoff.nominal_delay(max(1, attempts + 1))

    async def _undo(self, rec: TransactionRecord, action: str, target: str) -> str:
        """Run one undo action; returns the history line saying what it did."""
        d = self.saga.ctx
        if action == "unpin_upload":  # target: the gradient hash; the CID is learned first
            target = await self.saga.failure.upload_cid(rec)
            action = "unpin"
        if action == "unpin":
            # The same bytes make the same CID: another transaction of this journal (a later
            # attempt at the round, a retry) may have committed or be uploading the very
            # content this undo would remove.
            needed = await d.journal.cid_needed_by(target, other_than=rec.id)
            if needed is not None:
                other, state = needed
                return f"kept pin {target}: transaction {other} ({state.value}) needs it"
            await d.store_calls.call(
                "unpin", functools.partial(d.store.unpin, target), transaction_id=rec.id
            )
            return f"unpin {target}"
        raise ValueError(f"unknown compensation action {action!r}")

    async def run(self, rec: TransactionRecord) -> TransactionRecord:
        """Run the transaction's pending undo actions; ROLLED_BACK only if all succeed."""
        d = self.saga.ctx
        rows = await d.journal.compensations(tx_id=rec.id)
        done: list[int] = []
        history: list[HistoryEntry] = []
        failed = False
        for row in rows:  # newest first: reverse order of registration
            try:
                outcome = await self._undo(rec, row.action, row.target)
            except Exception as exc:
                failed = True
                await self._failed(rec, row, to_r3mes_error(exc))
                continue
            done.append(row.id)
            history.append(
                HistoryEntry(
                    rec.id,
                    d.clock.time(),
                    "compensation",
                    step=row.action,
                    attempt=row.attempts + 1,
                    message=outcome,
                )
            )
            d.bus.publish(
                CompensationDone(
                    transaction_id=rec.id, action=row.action, target=row.target, ts=d.clock.time()
                )
            )
        change = Change(rec.id, d.clock.time(), compensations_done=done, history=history)
        if not failed and rec.state is TxState.COMPENSATING:
            change.state = TxState.ROLLED_BACK
            change.expect = frozenset({TxState.COMPENSATING})
            change.fields["compensation"] = "done"
        if done or change.state is not None:
            rec = await self.saga.commit(rec, change)
        return rec

    async def _failed(
        self, rec: TransactionRecord, row: CompensationRow, error: R3mesError
    ) -> None:
        """Record a failed undo attempt (not durable: a lost row only means an earlier
        retry) and tell the window; the transaction keeps its original error."""
        d = self.saga.ctx
        now = d.clock.time()
        await d.journal.compensation_failed(
            row.id,
            now=now,
            next_at=now + self._delay(row.attempts),
            error=error.message,
            entry=HistoryEntry(
                rec.id,
                now,
                "compensation_failed",
                step=row.action,
                attempt=row.attempts + 1,
                category=str(error.category),
                message=f"{row.action} {row.target}: {error.message}",
            ),
        )
        d.bus.publish(
            CompensationFailed(
                transaction_id=rec.id,
                action=row.action,
                target=row.target,
                category=str(error.category),
                message=error.message,
                ts=now,
            )
        )

    async def retry_due(self, *, skip: Callable[[str], bool]) -> int:
        """Retry every due undo action of transactions nobody is driving; returns how many
        transactions were retried."""
        d = self.saga.ctx
        rows = await d.journal.compensations(due_before=d.clock.time())
        retried = 0
        for tx_id in dict.fromkeys(row.transaction_id for row in rows):
            if skip(tx_id):
                continue
            rec = await d.journal.get(tx_id)
            if rec is None:
                continue
            try:
                await self.run(rec)
            except Exception:
                log.exception("retrying compensations of %s failed", tx_id)
            retried += 1
        return retried
