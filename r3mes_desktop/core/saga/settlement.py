"""The steps after the pivot: BLOCKCHAIN_SUBMIT and TASK_COMPLETE, and the rule that only
the chain settles a signed submission (`in_doubt`, `park_in_doubt`).

Once the submission is signed its bytes may sit in a node's mempool and be mined later, so
every path here asks the chain (receipt, stored submission) before anything is undone.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING

from r3mes_desktop.core.errors import (
    AlreadySubmittedError,
    AuthenticationError,
    DeadlineExceededError,
    ErrorCategory,
    NetworkError,
    R3mesError,
    SignatureVoidError,
    ValidationError,
)
from r3mes_desktop.core.events import Notice
from r3mes_desktop.core.journal import Change
from r3mes_desktop.core.records import HistoryEntry, TransactionRecord
from r3mes_desktop.core.resilience.retry import RetryPolicy
from r3mes_desktop.core.saga.context import MAX_RESIGNS, SagaContext, Scratch
from r3mes_desktop.core.steps import Receipt, SignedSubmission
from r3mes_desktop.core.txstate import TxState

if TYPE_CHECKING:
    from r3mes_desktop.core.saga.engine import Saga

log = logging.getLogger(__name__)


class Settlement:
    def __init__(self, saga: Saga) -> None:
        self.saga = saga
        self.ctx: SagaContext = saga.ctx
        self.scratch: Scratch = saga.scratch
        ctx = self.ctx
        # broadcast + wait is one call: a retry re-sends the same bytes ("already known"
        # counts as sent) and waits again, so its timeout covers both
        send_timeout = (ctx.chain_calls.timeout_s or 0.0) + ctx.receipt_timeout_s
        self._chain_send = ctx.chain_calls.with_options(timeout_s=send_timeout)
        self._task_once = ctx.task_calls.with_options(policy=RetryPolicy(max_retries=0))

    async def find_on_chain(self, rec: TransactionRecord) -> tuple[bool, int | None]:
        """Is our submission on chain? (found, block). Raises AlreadySubmittedError when the
        contract holds another CID for this (round, miner).

        A failed lookup (any category: a 401 on a read is not the chain refusing our bytes)
        is "no answer" and raised as a NetworkError, so the submission stays in doubt.
        """
        try:
            return await self._lookup_on_chain(rec)
        except AlreadySubmittedError:
            raise
        except R3mesError as exc:
            if exc.category is ErrorCategory.NETWORK:
                raise
            raise NetworkError(
                f"could not ask the chain whether {rec.tx_hash} was mined: {exc.message}",
                service="chain",
            ) from exc

    async def _lookup_on_chain(self, rec: TransactionRecord) -> tuple[bool, int | None]:
        tx = rec.id
        if rec.tx_hash is not None:
            receipt = await self.ctx.chain_calls.call(
                "receipt", functools.partial(self.ctx.chain.receipt, rec.tx_hash), transaction_id=tx
            )
            if receipt is not None and receipt.success:
                return True, receipt.block_number
        stored = await self.ctx.chain_calls.call(
            "submission_of",
            functools.partial(self.ctx.chain.submission_of, rec.round_id),
            transaction_id=tx,
        )
        if stored is None:
            return False, None
        if stored.cid == rec.cid:
            return True, None
        raise AlreadySubmittedError(
            f"round {rec.round_id} already holds another submission from this miner",
            stored_cid=stored.cid,
            service="chain",
        )

    def submitted(self, rec: TransactionRecord, block: int | None, note: str | None) -> Change:
        history = []
        if note is not None:
            history.append(HistoryEntry(rec.id, self.ctx.clock.time(), "note", message=note))
        return Change(
            rec.id,
            self.ctx.clock.time(),
            state=TxState.TASK_COMPLETE,
            expect=frozenset({TxState.BLOCKCHAIN_SUBMIT}),
            fields={"receipt_block": block},
            history=history,
            outbox_add=True,
        )

    async def landed(self, rec: TransactionRecord, block: int | None, note: str | None) -> Change:
        """The submission is on chain: try the completion once, and if it answers commit
        BLOCKCHAIN_SUBMIT → TASK_COMPLETE → COMMITTED in one journal write.

        Why one write is enough: the receipt can be asked from the chain again (recovery of
        BLOCKCHAIN_SUBMIT does that first) and `complete_task` is idempotent, so a crash
        before this commit costs one lookup and one repeated call, never a duplicate or an
        orphan. If the completion fails, TASK_COMPLETE and the outbox row are committed
        first and the next step retries with the full policy.
        """
        change = self.submitted(rec, block, note)
        now = self.ctx.clock.time
        try:
            await self._task_once.call(
                "complete_task",
                functools.partial(self.ctx.task_api.complete_task, round_id=rec.round_id),
                transaction_id=rec.id,
            )
        except R3mesError as exc:
            change.history.append(
                HistoryEntry(
                    rec.id,
                    now(),
                    "error",
                    step=TxState.TASK_COMPLETE.value,
                    attempt=1,
                    category=str(exc.category),
                    message=exc.message,
                )
            )
            return change
        change.state = TxState.COMMITTED
        change.via = TxState.TASK_COMPLETE
        change.outbox_add = False
        return change

    async def _broadcast_and_wait(self, signed: SignedSubmission) -> Receipt:
        await self.ctx.chain.broadcast(signed)
        return await self.ctx.chain.wait_receipt(
            signed.tx_hash, timeout_s=self.ctx.receipt_timeout_s
        )

    async def submit(self, rec: TransactionRecord, resumed: bool, expired: bool) -> Change:
        tx = rec.id
        assert rec.signed_raw is not None and rec.tx_hash is not None
        if resumed or expired or rec.attempts > 0:
            found, block = await self.find_on_chain(rec)
            if found:
                return await self.landed(rec, block, "found on chain")
            # Past its deadline too: the same signed bytes are sent again rather than undone,
            # because only the chain can say they will never be mined (see `in_doubt`).
            await self.saga.steps.ensure_pinned(rec, check_first=True)
        signed = SignedSubmission(rec.signed_raw, rec.tx_hash, rec.account_nonce or 0)
        try:
            receipt = await self._chain_send.call(
                "broadcast", self._broadcast_and_wait, signed, transaction_id=tx
            )
        except AlreadySubmittedError as exc:
            if exc.stored_cid is not None and exc.stored_cid == rec.cid:
                return await self.landed(rec, None, "already on chain with our CID")
            raise
        except SignatureVoidError as exc:
            return await self._sign_again(rec, exc)
        except (NetworkError, AuthenticationError) as exc:
            # The broadcast may have reached the node although we never heard back, or it was
            # sent and a later read was refused (HTTP 401 on the receipt): ask the chain
            # before anyone unpins content a mined submission points at.
            try:
                found, block = await self.find_on_chain(rec)
            except R3mesError as check:
                log.warning("could not reconcile %s with the chain: %s", tx, check.message)
                if isinstance(exc, AuthenticationError):  # no answer from the chain: in doubt
                    raise NetworkError(
                        f"could not ask the chain whether {rec.tx_hash} was mined: {check.message}",
                        service="chain",
                    ) from exc
                found, block = False, None
            if found:
                return await self.landed(rec, block, f"found on chain after {exc.category} errors")
            raise
        if not receipt.success:
            raise ValidationError(f"submission {rec.tx_hash} reverted", service="chain")
        return await self.landed(rec, receipt.block_number, None)

    async def _sign_again(self, rec: TransactionRecord, void: SignatureVoidError) -> Change:
        """Replace a signature the chain proved can never be mined with a fresh one.

        Exactly-once holds: the old bytes can never land, and the contract takes one
        submission per (round, miner), which `find_on_chain` asks first. The new signature is
        journaled (and the claim moved to its hash) before it is broadcast: intent before
        effect. A nonce taken again and again (a runaway script on the same key) is not
        chased forever: after MAX_RESIGNS in one drive the transaction fails and its dead
        letter's Retry signs again.
        """
        count = self.scratch.resigned.get(rec.id, 0) + 1
        if count > MAX_RESIGNS:
            raise void
        self.scratch.resigned[rec.id] = count
        found, block = await self.find_on_chain(rec)
        if found:
            return await self.landed(rec, block, "found on chain")
        assert rec.cid is not None and rec.gradient_hash is not None and rec.pow_nonce is not None
        signed = await self.ctx.chain_calls.call(
            "sign_submission",
            functools.partial(
                self.ctx.chain.sign_submission,
                round_id=rec.round_id,
                cid=rec.cid,
                gradient_hash=bytes.fromhex(rec.gradient_hash),
                pow_nonce=rec.pow_nonce,
            ),
            transaction_id=rec.id,
        )
        now = self.ctx.clock.time()
        note = (
            f"{void.message}; signed again with account nonce {signed.account_nonce} "
            f"(tx {signed.tx_hash})"
        )
        log.warning("transaction %s: %s", rec.id, note)
        return Change(
            rec.id,
            now,
            expect=frozenset({TxState.BLOCKCHAIN_SUBMIT}),
            fields={
                "signed_raw": signed.raw,
                "tx_hash": signed.tx_hash,
                "account_nonce": signed.account_nonce,
            },
            history=[HistoryEntry(rec.id, now, "note", message=note)],
            claim_submission=True,
        )

    async def complete(self, rec: TransactionRecord, resumed: bool) -> Change:
        now = self.ctx.clock.time
        committed = Change(
            rec.id, now(), state=TxState.COMMITTED, expect=frozenset({TxState.TASK_COMPLETE})
        )
        if resumed:
            return committed  # the outbox delivers the completion
        try:
            await self.ctx.task_calls.call(
                "complete_task",
                functools.partial(self.ctx.task_api.complete_task, round_id=rec.round_id),
                transaction_id=rec.id,
            )
        except R3mesError as exc:
            self.ctx.bus.publish(
                Notice(
                    level="warning",
                    message=(
                        f"Round {rec.round_id} is submitted on chain, but marking the task "
                        f"complete failed ({exc.category}); it will be retried in the background."
                    ),
                    transaction_id=rec.id,
                    source="coordinator",
                    ts=now(),
                )
            )
            committed.history.append(
                HistoryEntry(
                    rec.id,
                    now(),
                    "error",
                    step=TxState.TASK_COMPLETE.value,
                    category=str(exc.category),
                    message=exc.message,
                )
            )
            committed.fields["next_retry_at"] = now()
            return committed
        committed.outbox_done = True
        committed.fields["next_retry_at"] = None
        return committed

    @staticmethod
    def in_doubt(rec: TransactionRecord, error: R3mesError) -> bool:
        """Past the pivot, a network failure settles nothing.

        Once the submission is signed its bytes may sit in a node's mempool (a broadcast
        whose answer was lost, a timeout after sending) and be mined later. Unpinning then
        would leave a mined submission pointing at deleted content: lost work. Only an answer
        from the chain settles it: a receipt, the stored submission, or a refusal of the same
        bytes (nonce consumed, revert, insufficient funds), each of which is not a network error.
        """
        return (
            rec.state is TxState.BLOCKCHAIN_SUBMIT
            and rec.signed_raw is not None
            and (
                error.category is ErrorCategory.NETWORK
                or isinstance(error, DeadlineExceededError)  # our limit, not the chain's word
            )
        )

    async def park_in_doubt(self, rec: TransactionRecord, error: R3mesError) -> TransactionRecord:
        """Leave the transaction in BLOCKCHAIN_SUBMIT with a next try; maintenance re-sends
        the same signed bytes until the chain answers (also after a restart)."""
        now = self.ctx.clock.time()
        delay = self.ctx.chain_calls.policy.nominal_delay(rec.attempts + 1)
        message = f"waiting for the chain to settle the submission: {error.message}"
        change = Change(
            rec.id,
            now,
            expect=frozenset({TxState.BLOCKCHAIN_SUBMIT}),
            fields={
                "attempts": rec.attempts + 1,
                "next_retry_at": now + delay,
                "error_category": str(error.category),
                "error_message": message,
            },
            history=[
                HistoryEntry(
                    rec.id,
                    now,
                    "error",
                    step=TxState.BLOCKCHAIN_SUBMIT.value,
                    attempt=rec.attempts + 1,
                    delay=delay,
                    category=str(error.category),
                    message=message,
                )
            ],
        )
        log.warning("transaction %s in doubt, next try in %.0f s: %s", rec.id, delay, message)
        self.ctx.bus.publish(Notice(level="warning", message=message, transaction_id=rec.id))
        return await self.saga.commit(rec, change)
