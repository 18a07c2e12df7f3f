"""The saga's engine: drive one mining transaction from its journaled state to a terminal one.

Each step reads what it needs from the journal record, does its effect, and returns the
`Change` that records the result; `drive` commits it before the next step starts. So the
journal always holds what the next effect needs (intent before effect):

- FETCH fetches (or finds cached) the files the round names (the model version's adapter,
  the dataset) through the store's caller, verifies their sha256 and journals CID, hash and
  local path; a round naming neither starts in TRAINING (`fetching`).
- TRAINING ends with the gradient journaled (a row, or a durable file), its hash and the
  PoW nonce; training and PoW are device-bound lanes (`lane`, one per mining device), so
  only one transaction uses a device at a time while uploads and submissions of others
  overlap it (`steps`).
- IPFS_UPLOAD looks before adding, pins the journaled bytes (same bytes, same CID), then
  signs the submission locally; CID, raw signed bytes and tx hash are committed together with
  the (round, miner) claim before anything is broadcast (`steps`).
- BLOCKCHAIN_SUBMIT broadcasts exactly the journaled bytes; a retry, a recovery or a timeout
  first asks the chain (receipt, `submission_of`); it signs again only when the chain proves
  the old bytes void (`settlement`).
- TASK_COMPLETE never fails the transaction: a completion the task API refuses goes to the
  durable outbox and the transaction commits (`settlement`, `outbox`).
- A failure records itself and runs the undo actions its transaction registered (`failure`,
  `compensation`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from r3mes_desktop.core import artifacts
from r3mes_desktop.core.errors import DeadlineExceededError, ValidationError, to_r3mes_error
from r3mes_desktop.core.events import StepProgress, TransactionStateChanged
from r3mes_desktop.core.journal import Change
from r3mes_desktop.core.records import TransactionRecord
from r3mes_desktop.core.saga.compensation import Compensator
from r3mes_desktop.core.saga.context import SagaContext, Scratch, StepFailure
from r3mes_desktop.core.saga.failure import Failure
from r3mes_desktop.core.saga.fetching import Fetching, first_step
from r3mes_desktop.core.saga.settlement import Settlement
from r3mes_desktop.core.saga.steps import Steps
from r3mes_desktop.core.txstate import TERMINAL, TxState

log = logging.getLogger(__name__)


class Saga:
    def __init__(self, ctx: SagaContext) -> None:
        self.ctx = ctx
        self.scratch = Scratch()
        self.lane = asyncio.Semaphore(max(1, ctx.lanes))
        self.fetching = Fetching(self)
        self.steps = Steps(self)
        self.settlement = Settlement(self)
        self.failure = Failure(self)
        self.compensator = Compensator(self)

    # -- what the coordinator, cleanup and maintenance use --------------------------------
    @property
    def miner(self) -> str:
        return self.ctx.chain.miner_address

    def gradient_path(self, tx_id: str) -> Path:
        return self.ctx.artifacts_dir / f"{tx_id}{artifacts.GRADIENT_SUFFIX}"

    async def commit(self, rec: TransactionRecord, change: Change) -> TransactionRecord:
        """Apply `change` and publish every state it passed through."""
        new = await self.ctx.journal.apply(change)
        if new.state is not rec.state:
            hops = (
                [rec.state, new.state] if change.via is None else [rec.state, change.via, new.state]
            )
            for old, state in itertools.pairwise(hops):
                self.ctx.bus.publish(
                    TransactionStateChanged(
                        transaction_id=new.id,
                        round_id=new.round_id,
                        old_state=old.value,
                        new_state=state.value,
                        failed_step=new.failed_step,
                        error_category=new.error_category,
                        error_message=new.error_message,
                        ts=self.ctx.clock.time(),
                    )
                )
        return new

    def fail(
        self,
        rec: TransactionRecord,
        error: Any,
        *,
        step: TxState | None = None,
        message: str | None = None,
    ) -> Awaitable[TransactionRecord]:
        return self.failure.fail(rec, error, step=step, message=message)

    def progress(self, tx_id: str, step: str) -> Callable[[float, Mapping[str, Any]], None]:
        def report(fraction: float, detail: Mapping[str, Any]) -> None:
            if step == "training" and isinstance(detail.get("step"), int):
                self.scratch.training_step[tx_id] = int(detail["step"])
            self.ctx.bus.publish(
                StepProgress(
                    transaction_id=tx_id,
                    step=step,
                    fraction=max(0.0, min(1.0, float(fraction))),
                    detail=dict(detail),
                    ts=self.ctx.clock.time(),
                )
            )

        return report

    def release_lane(self, tx_id: str) -> None:
        callback = self.scratch.lane_released.pop(tx_id, None)
        if callback is not None:
            try:
                callback()
            except Exception:
                log.exception("lane-released callback of %s failed", tx_id)

    def _remaining(self, rec: TransactionRecord) -> float | None:
        if rec.deadline is None:
            return None
        return rec.deadline - self.ctx.clock.time()

    def _deadline_error(self, rec: TransactionRecord) -> DeadlineExceededError:
        return DeadlineExceededError(
            f"transaction exceeded R3MES_TRANSACTION_TIMEOUT ({self.ctx.timeout_s:g}s) "
            f"in {rec.state.value}"
        )

    # -- the loop -------------------------------------------------------------------------
    async def drive(
        self,
        rec: TransactionRecord,
        *,
        resumed: bool = False,
        on_lane_released: Callable[[], None] | None = None,
    ) -> TransactionRecord:
        """Run steps until the transaction is terminal (or waits in COMPENSATING).

        `on_lane_released` is called once, as soon as this transaction no longer needs the
        training lane (the miner then starts training the next round).
        """
        if on_lane_released is not None:
            self.scratch.lane_released[rec.id] = on_lane_released
        try:
            while rec.state not in TERMINAL and rec.state is not TxState.COMPENSATING:
                remaining = self._remaining(rec)
                expired = remaining is not None and remaining <= 0
                try:
                    if expired and rec.state not in (
                        TxState.BLOCKCHAIN_SUBMIT,
                        TxState.TASK_COMPLETE,
                    ):
                        raise self._deadline_error(rec)
                    change = await self._run_step(rec, resumed, expired, remaining)
                except asyncio.CancelledError:
                    raise
                except StepFailure as failure:
                    return await self.fail(rec, failure.error, step=failure.step)
                except Exception as exc:
                    error = to_r3mes_error(exc)
                    if self.settlement.in_doubt(rec, error):
                        return await self.settlement.park_in_doubt(rec, error)
                    return await self.fail(rec, error)
                before = rec.state
                rec = await self.commit(rec, change)
                if rec.state is not before:  # a note within a step keeps what it knew
                    resumed = False
                    await self._after_commit(rec)
            if rec.state is TxState.COMPENSATING:
                rec = await self.compensator.run(rec)
            return rec
        finally:
            self.release_lane(rec.id)
            self.scratch.forget(rec.id)

    async def _run_step(
        self, rec: TransactionRecord, resumed: bool, expired: bool, remaining: float | None
    ) -> Change:
        if rec.state is TxState.TASK_COMPLETE:
            return await self.settlement.complete(rec, resumed)
        if rec.state is TxState.BLOCKCHAIN_SUBMIT:
            submit = self.settlement.submit(rec, resumed, expired)
            return await self._bounded(submit, rec, remaining)
        if rec.state is TxState.PENDING:
            return Change(rec.id, self.ctx.clock.time(), state=first_step(rec.spec))
        if rec.state is TxState.FETCH:
            return await self._bounded(self.fetching.fetch(rec), rec, remaining)
        if rec.state is TxState.TRAINING:
            return await self._bounded(self.steps.train(rec), rec, remaining)
        if rec.state is TxState.IPFS_UPLOAD:
            return await self._bounded(self.steps.upload(rec, resumed), rec, remaining)
        raise ValidationError(f"transaction {rec.id} cannot be driven from {rec.state.value}")

    async def _bounded(
        self, step: Awaitable[Change], rec: TransactionRecord, remaining: float | None
    ) -> Change:
        """Run a step under the transaction deadline; a hung effect cannot outlive it."""
        if remaining is None or remaining <= 0:
            return await step
        try:
            async with asyncio.timeout(remaining):
                result = await step
        except TimeoutError as exc:
            raise self._deadline_error(rec) from exc
        left = self._remaining(rec)
        if left is not None and left <= 0 and rec.state is not TxState.BLOCKCHAIN_SUBMIT:
            raise self._deadline_error(rec)  # finished, but too late: undo it
        return result

    async def _after_commit(self, rec: TransactionRecord) -> None:
        if rec.state is TxState.IPFS_UPLOAD:
            try:  # the gradient is journaled: the checkpoint is not needed any more
                await self.ctx.trainer.discard_checkpoints(rec.id)
            except Exception as exc:
                log.warning("discarding checkpoints of %s failed: %s", rec.id, exc)
