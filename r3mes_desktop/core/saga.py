"""The saga: drive one mining transaction from its journaled state to a terminal one.

Each step reads what it needs from the journal record, does its effect, and returns the
`Change` that records the result; `drive` commits it before the next step starts. So the
journal always holds what the next effect needs (intent before effect):

- TRAINING ends with the gradient written atomically to the artifacts dir, its hash and the
  PoW nonce; training and PoW are one device-bound lane (`lane`), so only one transaction
  uses the device at a time while uploads and submissions of others overlap it.
- IPFS_UPLOAD pins the journaled bytes (same bytes, same CID: re-adding is idempotent), then
  signs the submission locally; CID, raw signed bytes and tx hash are committed together with
  the (round, miner) claim before anything is broadcast.
- BLOCKCHAIN_SUBMIT broadcasts exactly the journaled bytes; a retry, a recovery or a timeout
  first asks the chain (receipt, `submission_of`) and never signs again.
- TASK_COMPLETE never fails the transaction: a completion the task API refuses goes to the
  durable outbox and the transaction commits.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import itertools
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from r3mes_desktop.core import artifacts
from r3mes_desktop.core.clock import Clock
from r3mes_desktop.core.errors import (
    AlreadySubmittedError,
    AuthenticationError,
    DeadlineExceededError,
    ErrorCategory,
    IntegrityError,
    NetworkError,
    R3mesError,
    SignatureVoidError,
    ValidationError,
    had_no_effect,
    to_r3mes_error,
)
from r3mes_desktop.core.events import EventBus, Notice, StepProgress, TransactionStateChanged
from r3mes_desktop.core.journal import Change, Journal
from r3mes_desktop.core.records import HistoryEntry, TransactionRecord
from r3mes_desktop.core.resilience import ServiceCaller
from r3mes_desktop.core.retry import RetryPolicy
from r3mes_desktop.core.steps import (
    Chain,
    ContentStore,
    ProofOfWork,
    Receipt,
    SignedSubmission,
    TaskApi,
)
from r3mes_desktop.core.steps import Trainer as TrainerProtocol
from r3mes_desktop.core.txstate import TERMINAL, TxState

log = logging.getLogger(__name__)

DEAD_LETTER_CATEGORIES = frozenset(
    {
        ErrorCategory.PERMANENT,
        ErrorCategory.AUTHENTICATION,
        ErrorCategory.NETWORK,
        ErrorCategory.RESOURCE,
    }
)
"""Final failures worth a later manual retry: the peer, the wallet or the machine may be
fixed. Validation/unknown failures are shown as failed but retrying the same input is futile."""


MAX_RESIGNS = 3
"""Signatures voided by someone else's use of the nonce that one drive replaces."""


class StepFailure(Exception):
    """An error attributed to a step other than the state it happened in (signing)."""

    def __init__(self, step: TxState, error: R3mesError) -> None:
        super().__init__(error.message)
        self.step = step
        self.error = error


@dataclass
class SagaDeps:
    journal: Journal
    trainer: TrainerProtocol
    pow: ProofOfWork
    store: ContentStore
    chain: Chain
    task_api: TaskApi
    ipfs: ServiceCaller
    chain_caller: ServiceCaller
    task: ServiceCaller
    resource_policy: RetryPolicy
    bus: EventBus
    clock: Clock
    artifacts_dir: Path
    timeout_s: float
    max_gradient_bytes: int
    receipt_timeout_s: float


class Saga:
    def __init__(self, deps: SagaDeps) -> None:
        self.d = deps
        self.lane = asyncio.Lock()
        self._learned_cid: dict[str, str] = {}
        # Transactions whose adds, in this process, all certainly changed nothing (refused
        # connections, an open breaker, refusals the daemon answered): nothing to undo.
        self._adds_without_effect: set[str] = set()
        self._fresh_gradient: dict[str, bytes] = {}  # written and journaled moments ago
        self._training_step: dict[str, int] = {}
        self._lane_released: dict[str, Callable[[], None]] = {}
        self._resigned: dict[str, int] = {}  # signatures voided and replaced, this drive
        # broadcast + wait is one call: a retry re-sends the same bytes ("already known"
        # counts as sent) and waits again, so its timeout covers both
        send_timeout = (deps.chain_caller.timeout_s or 0.0) + deps.receipt_timeout_s
        self._chain_send = deps.chain_caller.with_options(timeout_s=send_timeout)
        self._task_once = deps.task.with_options(policy=RetryPolicy(max_retries=0))
        self.compensate: Callable[[TransactionRecord], Awaitable[TransactionRecord]] | None = None
        """Runs a COMPENSATING transaction's pending undo actions (set by the coordinator)."""

    # -- plumbing -------------------------------------------------------------------------
    @property
    def miner(self) -> str:
        return self.d.chain.miner_address

    def gradient_path(self, tx_id: str) -> Path:
        return self.d.artifacts_dir / f"{tx_id}{artifacts.GRADIENT_SUFFIX}"

    async def commit(self, rec: TransactionRecord, change: Change) -> TransactionRecord:
        new = await self.d.journal.apply(change)
        if new.state is not rec.state:
            hops = (
                [rec.state, new.state] if change.via is None else [rec.state, change.via, new.state]
            )
            for old, state in itertools.pairwise(hops):
                self.d.bus.publish(
                    TransactionStateChanged(
                        transaction_id=new.id,
                        round_id=new.round_id,
                        old_state=old.value,
                        new_state=state.value,
                        failed_step=new.failed_step,
                        error_category=new.error_category,
                        error_message=new.error_message,
                        ts=self.d.clock.time(),
                    )
                )
        return new

    def _progress(self, tx_id: str, step: str) -> Callable[[float, Mapping[str, Any]], None]:
        def report(fraction: float, detail: Mapping[str, Any]) -> None:
            if step == "training" and isinstance(detail.get("step"), int):
                self._training_step[tx_id] = int(detail["step"])
            self.d.bus.publish(
                StepProgress(
                    transaction_id=tx_id,
                    step=step,
                    fraction=max(0.0, min(1.0, float(fraction))),
                    detail=dict(detail),
                    ts=self.d.clock.time(),
                )
            )

        return report

    def _release_lane(self, tx_id: str) -> None:
        callback = self._lane_released.pop(tx_id, None)
        if callback is not None:
            try:
                callback()
            except Exception:
                log.exception("lane-released callback of %s failed", tx_id)

    def _remaining(self, rec: TransactionRecord) -> float | None:
        if rec.deadline is None:
            return None
        return rec.deadline - self.d.clock.time()

    def _timeout_error(self, rec: TransactionRecord) -> DeadlineExceededError:
        return DeadlineExceededError(
            f"transaction exceeded R3MES_TRANSACTION_TIMEOUT ({self.d.timeout_s:g}s) "
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
            self._lane_released[rec.id] = on_lane_released
        try:
            while rec.state not in TERMINAL and rec.state is not TxState.COMPENSATING:
                remaining = self._remaining(rec)
                expired = remaining is not None and remaining <= 0
                try:
                    if expired and rec.state not in (
                        TxState.BLOCKCHAIN_SUBMIT,
                        TxState.TASK_COMPLETE,
                    ):
                        raise self._timeout_error(rec)
                    change = await self._run_step(rec, resumed, expired, remaining)
                except asyncio.CancelledError:
                    raise
                except StepFailure as failure:
                    return await self.fail(rec, failure.error, step=failure.step)
                except Exception as exc:
                    error = to_r3mes_error(exc)
                    if self.in_doubt(rec, error):
                        return await self.park_in_doubt(rec, error)
                    return await self.fail(rec, error)
                before = rec.state
                rec = await self.commit(rec, change)
                if rec.state is not before:  # a note within a step keeps what it knew
                    resumed = False
                    await self._after_commit(rec)
            if rec.state is TxState.COMPENSATING and self.compensate is not None:
                rec = await self.compensate(rec)
            return rec
        finally:
            self._release_lane(rec.id)
            self._learned_cid.pop(rec.id, None)
            self._adds_without_effect.discard(rec.id)
            self._training_step.pop(rec.id, None)
            self._fresh_gradient.pop(rec.id, None)
            self._resigned.pop(rec.id, None)

    async def _run_step(
        self, rec: TransactionRecord, resumed: bool, expired: bool, remaining: float | None
    ) -> Change:
        if rec.state is TxState.TASK_COMPLETE:
            return await self._complete(rec, resumed)
        if rec.state is TxState.BLOCKCHAIN_SUBMIT:
            return await self._bounded(self._submit(rec, resumed, expired), rec, remaining)
        if rec.state is TxState.PENDING:
            return Change(rec.id, self.d.clock.time(), state=TxState.TRAINING)
        if rec.state is TxState.TRAINING:
            return await self._bounded(self._train(rec), rec, remaining)
        if rec.state is TxState.IPFS_UPLOAD:
            return await self._bounded(self._upload(rec, resumed), rec, remaining)
        raise ValidationError(f"transaction {rec.id} cannot be driven from {rec.state.value}")

    async def _bounded(self, step: Any, rec: TransactionRecord, remaining: float | None) -> Change:
        """Run a step under the transaction deadline; a hung effect cannot outlive it."""
        if remaining is None or remaining <= 0:
            result: Change = await step
            return result
        try:
            async with asyncio.timeout(remaining):
                result = await step
        except TimeoutError as exc:
            raise self._timeout_error(rec) from exc
        left = self._remaining(rec)
        if left is not None and left <= 0 and rec.state is not TxState.BLOCKCHAIN_SUBMIT:
            raise self._timeout_error(rec)  # finished, but too late: undo it
        return result

    async def _after_commit(self, rec: TransactionRecord) -> None:
        if rec.state is TxState.IPFS_UPLOAD:
            try:  # the gradient is durable in the artifacts dir: the checkpoint is not needed
                await self.d.trainer.discard_checkpoints(rec.id)
            except Exception as exc:
                log.warning("discarding checkpoints of %s failed: %s", rec.id, exc)

    # -- steps ----------------------------------------------------------------------------
    async def _train(self, rec: TransactionRecord) -> Change:
        try:
            return await self._train_in_lane(rec)
        finally:
            self._release_lane(rec.id)

    async def _train_in_lane(self, rec: TransactionRecord) -> Change:
        async with self.lane:
            tx = rec.id
            result = await self.d.resource_policy.call_async(
                functools.partial(
                    self.d.trainer.train,
                    transaction_id=tx,
                    spec=rec.spec,
                    progress=self._progress(tx, "training"),
                ),
                operation="train",
                service="trainer",
                bus=self.d.bus,
                clock=self.d.clock,
                transaction_id=tx,
            )
            if len(result.data) > self.d.max_gradient_bytes:
                raise ValidationError(
                    f"gradient size {len(result.data)} bytes exceeds "
                    f"R3MES_MAX_GRADIENT_SIZE_MB ({self.d.max_gradient_bytes} bytes)"
                )
            digest = hashlib.sha256(result.data).digest()
            if digest != result.gradient_hash:
                raise IntegrityError("trainer's gradient_hash is not sha256 of its bytes")
            nonce = await self.d.resource_policy.call_async(
                functools.partial(
                    self.d.pow.solve,
                    gradient_hash=digest,
                    miner=self.miner,
                    round_id=rec.round_id,
                    difficulty=rec.spec.difficulty,
                    progress=self._progress(tx, "pow"),
                ),
                operation="pow",
                service="pow",
                bus=self.d.bus,
                clock=self.d.clock,
                transaction_id=tx,
            )
        # The device is free now: the next round trains while this one's gradient is made
        # durable. The journal writes it (atomically, fsynced) before committing its hash,
        # together with the other gradients and records of its group commit.
        self._release_lane(tx)
        path = self.gradient_path(tx)
        self._fresh_gradient[tx] = result.data
        return Change(
            tx,
            self.d.clock.time(),
            state=TxState.IPFS_UPLOAD,
            expect=frozenset({TxState.TRAINING}),
            fields={
                "gradient_hash": digest.hex(),
                "gradient_path": str(path),
                "pow_nonce": int(nonce),
                "training_step": self._training_step.get(tx),
            },
            artifact=(path, result.data),
        )

    async def ensure_pinned(self, rec: TransactionRecord, *, check_first: bool) -> str:
        """Pin the journaled gradient and return its CID (re-adding is idempotent)."""
        assert rec.gradient_hash is not None
        tx = rec.id
        if check_first and rec.cid is not None:
            pinned = await self.d.ipfs.call(
                "is_pinned", functools.partial(self.d.store.is_pinned, rec.cid), transaction_id=tx
            )
            if pinned:
                return rec.cid
        data = self._fresh_gradient.pop(tx, None)
        if data is None:  # resumed or retried: the durable copy, checked against the journal
            data = await self.d.journal.gradient(rec)
        if not check_first:  # a first upload: nothing pinned yet
            self._adds_without_effect.add(tx)

        async def add() -> str:
            try:
                return await self.d.store.add_and_pin(data)
            except BaseException as exc:
                if not had_no_effect(exc):
                    self._adds_without_effect.discard(tx)
                raise

        cid = await self.d.ipfs.call("add_and_pin", add, transaction_id=tx)
        self._adds_without_effect.discard(tx)  # this one pinned
        self._learned_cid[tx] = cid
        if rec.cid is not None and cid != rec.cid:
            raise IntegrityError(f"re-pinned gradient got CID {cid}, journal holds {rec.cid}")
        return cid

    async def _look_before_adding(self, rec: TransactionRecord) -> Change:
        """Journal the CID and whether the store already pins it, before our first add.

        An undo removes only what its own transaction added: content another miner on the
        same daemon (or an earlier transaction of ours) pinned first must outlive our
        rollback. IPFS pins are a set, not a count, so the only way to know is to ask before
        adding, and the answer must be durable before the add (intent before effect).
        """
        tx = rec.id
        self._adds_without_effect.add(tx)  # nothing added yet: a failure here undoes nothing
        data = self._fresh_gradient.get(tx)
        if data is None:
            data = await self.d.journal.gradient(rec)
            self._fresh_gradient[tx] = data
        cid = await asyncio.to_thread(self.d.store.cid_of, data)
        pinned = await self.d.ipfs.call(
            "is_pinned", functools.partial(self.d.store.is_pinned, cid), transaction_id=tx
        )
        return Change(
            tx,
            self.d.clock.time(),
            expect=frozenset({TxState.IPFS_UPLOAD}),
            fields={"cid": cid, "pinned_before": bool(pinned)},
        )

    async def _upload(self, rec: TransactionRecord, resumed: bool) -> Change:
        tx = rec.id
        if rec.pinned_before is None and rec.signed_raw is None:
            return await self._look_before_adding(rec)
        cid = await self.ensure_pinned(rec, check_first=resumed or rec.attempts > 0)
        try:
            if rec.signed_raw is not None and rec.tx_hash is not None and rec.cid == cid:
                signed = SignedSubmission(rec.signed_raw, rec.tx_hash, rec.account_nonce or 0)
            else:
                # No other transaction can hold a signature for this (round, miner): creation
                # and reopening refuse that, and the claim in the commit below re-checks.
                assert rec.gradient_hash is not None and rec.pow_nonce is not None
                signed = await self.d.chain_caller.call(
                    "sign_submission",
                    functools.partial(
                        self.d.chain.sign_submission,
                        round_id=rec.round_id,
                        cid=cid,
                        gradient_hash=bytes.fromhex(rec.gradient_hash),
                        pow_nonce=rec.pow_nonce,
                    ),
                    transaction_id=tx,
                )
        except R3mesError as exc:
            raise StepFailure(TxState.BLOCKCHAIN_SUBMIT, exc) from exc
        return Change(
            tx,
            self.d.clock.time(),
            state=TxState.BLOCKCHAIN_SUBMIT,
            expect=frozenset({TxState.IPFS_UPLOAD}),
            fields={
                "cid": cid,
                "signed_raw": signed.raw,
                "tx_hash": signed.tx_hash,
                "account_nonce": signed.account_nonce,
            },
            claim_submission=True,
        )

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
            receipt = await self.d.chain_caller.call(
                "receipt", functools.partial(self.d.chain.receipt, rec.tx_hash), transaction_id=tx
            )
            if receipt is not None and receipt.success:
                return True, receipt.block_number
        stored = await self.d.chain_caller.call(
            "submission_of",
            functools.partial(self.d.chain.submission_of, rec.round_id),
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
            history.append(HistoryEntry(rec.id, self.d.clock.time(), "note", message=note))
        return Change(
            rec.id,
            self.d.clock.time(),
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
        now = self.d.clock.time
        try:
            await self._task_once.call(
                "complete_task",
                functools.partial(self.d.task_api.complete_task, round_id=rec.round_id),
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
        await self.d.chain.broadcast(signed)
        return await self.d.chain.wait_receipt(signed.tx_hash, timeout_s=self.d.receipt_timeout_s)

    async def _submit(self, rec: TransactionRecord, resumed: bool, expired: bool) -> Change:
        tx = rec.id
        assert rec.signed_raw is not None and rec.tx_hash is not None
        if resumed or expired or rec.attempts > 0:
            found, block = await self.find_on_chain(rec)
            if found:
                return await self.landed(rec, block, "found on chain")
            # Past its deadline too: the same signed bytes are sent again rather than undone,
            # because only the chain can say they will never be mined (see `in_doubt`).
            await self.ensure_pinned(rec, check_first=True)
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
        count = self._resigned.get(rec.id, 0) + 1
        if count > MAX_RESIGNS:
            raise void
        self._resigned[rec.id] = count
        found, block = await self.find_on_chain(rec)
        if found:
            return await self.landed(rec, block, "found on chain")
        assert rec.cid is not None and rec.gradient_hash is not None and rec.pow_nonce is not None
        signed = await self.d.chain_caller.call(
            "sign_submission",
            functools.partial(
                self.d.chain.sign_submission,
                round_id=rec.round_id,
                cid=rec.cid,
                gradient_hash=bytes.fromhex(rec.gradient_hash),
                pow_nonce=rec.pow_nonce,
            ),
            transaction_id=rec.id,
        )
        now = self.d.clock.time()
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

    async def _complete(self, rec: TransactionRecord, resumed: bool) -> Change:
        now = self.d.clock.time
        committed = Change(
            rec.id, now(), state=TxState.COMMITTED, expect=frozenset({TxState.TASK_COMPLETE})
        )
        if resumed:
            return committed  # the outbox delivers the completion
        try:
            await self.d.task.call(
                "complete_task",
                functools.partial(self.d.task_api.complete_task, round_id=rec.round_id),
                transaction_id=rec.id,
            )
        except R3mesError as exc:
            self.d.bus.publish(
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

    # -- failure --------------------------------------------------------------------------
    async def upload_cid(self, rec: TransactionRecord) -> str:
        """The CID an interrupted upload may have pinned: re-adding the journaled bytes is
        idempotent and names it, so the undo can unpin it (no orphan pins). One try."""
        data = await self.d.journal.gradient(rec)
        once = self.d.ipfs.with_options(policy=RetryPolicy(max_retries=0))
        cid: str = await once.call(
            "add_and_pin", functools.partial(self.d.store.add_and_pin, data), transaction_id=rec.id
        )
        return cid

    async def _learn_cid(self, rec: TransactionRecord) -> str | None:
        try:
            return await self.upload_cid(rec)
        except Exception as exc:
            log.warning("could not learn the CID of %s to undo its upload: %s", rec.id, exc)
            return None

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
        now = self.d.clock.time()
        delay = self.d.chain_caller.policy.nominal_delay(rec.attempts + 1)
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
        self.d.bus.publish(Notice(level="warning", message=message, transaction_id=rec.id))
        return await self.commit(rec, change)

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
        cid = rec.cid or self._learned_cid.get(rec.id)
        # Any failure in IPFS_UPLOAD may follow an add that pinned but never answered (a
        # timeout on an earlier attempt, then a 401 on the retry): learn the CID so the undo
        # unpins it (an orphan pin found by bench.chaos when only the last error was looked at).
        maybe_pinned = rec.gradient_hash is not None and rec.id not in self._adds_without_effect
        others_pin = bool(rec.pinned_before)  # pinned before our first add: not ours to undo
        if rec.state is TxState.IPFS_UPLOAD and not maybe_pinned:
            cid = None  # every add of ours certainly changed nothing
        if cid is None and rec.state is TxState.IPFS_UPLOAD and maybe_pinned and not others_pin:
            cid = await self._learn_cid(rec)
        now = self.d.clock.time()
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
            # Not even the re-add answered (the ipfs breaker open, found by bench.chaos as an
            # orphan pin): the undo learns the CID later, then unpins; until then the
            # transaction stays COMPENSATING.
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
        if rec.id in self._training_step:
            fields["training_step"] = self._training_step[rec.id]
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
            await artifacts.remove(self.gradient_path(rec.id))
        rec = await self.commit(rec, change)
        if rec.state is TxState.COMPENSATING and self.compensate is not None:
            rec = await self.compensate(rec)
        return rec
