"""The durable outbox: task completions the task API has not acknowledged yet.

The row is written in the same sqlite transaction that records the chain receipt, so a
completion is never forgotten, not even across a crash; the worker delivers it (the call is
idempotent) until it succeeds, backing off between rounds.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from r3mes_desktop.core.errors import to_r3mes_error
from r3mes_desktop.core.journal import Change
from r3mes_desktop.core.records import HistoryEntry
from r3mes_desktop.core.txstate import TxState

if TYPE_CHECKING:
    from r3mes_desktop.core.saga.engine import Saga

log = logging.getLogger(__name__)


class Outbox:
    def __init__(self, saga: Saga) -> None:
        self.saga = saga
        self.backoff = saga.ctx.undo_backoff

    async def deliver_due(self, *, skip: Callable[[str], bool]) -> int:
        """Try every due completion once (through the task_api caller); returns deliveries.

        One loop over the due rows, each ending in one of three journal writes (delivered,
        retry later, or already settled): read together they are the outbox's whole rule."""
        d = self.saga.ctx
        delivered = 0
        for row in await d.journal.outbox(due_before=d.clock.time()):
            if skip(row.transaction_id):
                continue
            rec = await d.journal.get(row.transaction_id)
            if rec is None or rec.state not in (TxState.COMMITTED, TxState.TASK_COMPLETE):
                continue
            try:
                await d.task_calls.call(
                    "complete_task",
                    functools.partial(d.task_api.complete_task, round_id=row.round_id),
                    transaction_id=row.transaction_id,
                )
            except Exception as exc:
                error = to_r3mes_error(exc)
                now = d.clock.time()
                next_at = now + self.backoff.nominal_delay(row.attempts + 1)
                await d.journal.apply(
                    Change(
                        row.transaction_id,
                        now,
                        fields={"next_retry_at": next_at},
                        outbox_retry=(next_at, error.message),
                        history=[
                            HistoryEntry(
                                row.transaction_id,
                                now,
                                "error",
                                step=TxState.TASK_COMPLETE.value,
                                attempt=row.attempts + 1,
                                delay=next_at - now,
                                category=str(error.category),
                                message=error.message,
                            )
                        ],
                        durable=False,  # bookkeeping: a lost row only means an earlier retry
                    )
                )
                continue
            now = d.clock.time()
            await d.journal.apply(
                Change(
                    row.transaction_id,
                    now,
                    fields={"next_retry_at": None},
                    outbox_done=True,
                    history=[
                        HistoryEntry(
                            row.transaction_id,
                            now,
                            "note",
                            step=TxState.TASK_COMPLETE.value,
                            message="task completion delivered by the outbox",
                        )
                    ],
                )
            )
            delivered += 1
        return delivered
