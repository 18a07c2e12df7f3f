"""The steps before the pivot: TRAINING (training + proof of work in the device lane, on the
files FETCH journaled: `fetching`) and IPFS_UPLOAD (look before adding, pin the journaled
bytes, sign the submission).

Each returns the `Change` that records its result; the engine commits it before the next
effect starts (intent before effect).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
from typing import TYPE_CHECKING

from r3mes_desktop.core.errors import IntegrityError, R3mesError, ValidationError, had_no_effect
from r3mes_desktop.core.journal import Change
from r3mes_desktop.core.records import TransactionRecord
from r3mes_desktop.core.saga.context import SagaContext, Scratch, StepFailure
from r3mes_desktop.core.steps import SignedSubmission
from r3mes_desktop.core.txstate import TxState

if TYPE_CHECKING:
    from r3mes_desktop.core.saga.engine import Saga


class Steps:
    def __init__(self, saga: Saga) -> None:
        self.saga = saga
        self.ctx: SagaContext = saga.ctx
        self.scratch: Scratch = saga.scratch

    async def train(self, rec: TransactionRecord) -> Change:
        try:
            return await self._train_in_lane(rec)
        finally:
            self.saga.release_lane(rec.id)

    async def _train_in_lane(self, rec: TransactionRecord) -> Change:
        # The files FETCH journaled, hashed again (fetched again, verified, if evicted)
        model = await self.saga.fetching.for_training(rec)
        async with self.saga.lane:
            tx = rec.id
            result = await self.ctx.resource_policy.call_async(
                functools.partial(
                    self.ctx.trainer.train,
                    transaction_id=tx,
                    spec=rec.spec,
                    progress=self.saga.progress(tx, "training"),
                    **model,
                ),
                operation="train",
                service="trainer",
                bus=self.ctx.bus,
                clock=self.ctx.clock,
                transaction_id=tx,
            )
            if len(result.data) > self.ctx.max_gradient_bytes:
                raise ValidationError(
                    f"gradient size {len(result.data)} bytes exceeds "
                    f"R3MES_MAX_GRADIENT_SIZE_MB ({self.ctx.max_gradient_bytes} bytes)"
                )
            digest = hashlib.sha256(result.data).digest()
            if digest != result.gradient_hash:
                raise IntegrityError("trainer's gradient_hash is not sha256 of its bytes")
            nonce = await self.ctx.resource_policy.call_async(
                functools.partial(
                    self.ctx.pow.solve,
                    gradient_hash=digest,
                    miner=self.ctx.chain.miner_address,
                    round_id=rec.round_id,
                    difficulty=rec.spec.difficulty,
                    progress=self.saga.progress(tx, "pow"),
                ),
                operation="pow",
                service="pow",
                bus=self.ctx.bus,
                clock=self.ctx.clock,
                transaction_id=tx,
            )
        # The device is free now: the next round trains while this one's gradient is made
        # durable. The journal writes it (atomically, fsynced) before committing its hash,
        # together with the other gradients and records of its group commit.
        self.saga.release_lane(tx)
        path = self.saga.gradient_path(tx)
        self.scratch.fresh_gradient[tx] = result.data
        return Change(
            tx,
            self.ctx.clock.time(),
            state=TxState.IPFS_UPLOAD,
            expect=frozenset({TxState.TRAINING}),
            fields={
                "gradient_hash": digest.hex(),
                "gradient_path": str(path),
                "pow_nonce": int(nonce),
                "training_step": self.scratch.training_step.get(tx),
            },
            artifact=(path, result.data),
        )

    async def _look_before_adding(self, rec: TransactionRecord) -> Change:
        """Journal the CID and whether the store already pins it, before our first add.

        An undo removes only what its own transaction added: content another miner on the
        same daemon (or an earlier transaction of ours) pinned first must outlive our
        rollback. IPFS pins are a set, not a count, so the only way to know is to ask before
        adding, and the answer must be durable before the add (intent before effect).
        """
        tx = rec.id
        self.scratch.adds_without_effect.add(tx)  # nothing added yet: a failure here undoes nothing
        data = self.scratch.fresh_gradient.get(tx)
        if data is None:
            data = await self.ctx.journal.gradient(rec)
            self.scratch.fresh_gradient[tx] = data
        cid = await asyncio.to_thread(self.ctx.store.cid_of, data)
        pinned = await self.ctx.store_calls.call(
            "is_pinned", functools.partial(self.ctx.store.is_pinned, cid), transaction_id=tx
        )
        return Change(
            tx,
            self.ctx.clock.time(),
            expect=frozenset({TxState.IPFS_UPLOAD}),
            fields={"cid": cid, "pinned_before": bool(pinned)},
        )

    async def ensure_pinned(self, rec: TransactionRecord, *, check_first: bool) -> str:
        """Pin the journaled gradient and return its CID (re-adding is idempotent)."""
        assert rec.gradient_hash is not None
        tx = rec.id
        if check_first and rec.cid is not None:
            pinned = await self.ctx.store_calls.call(
                "is_pinned", functools.partial(self.ctx.store.is_pinned, rec.cid), transaction_id=tx
            )
            if pinned:
                return rec.cid
        data = self.scratch.fresh_gradient.pop(tx, None)
        if data is None:  # resumed or retried: the durable copy, checked against the journal
            data = await self.ctx.journal.gradient(rec)
        if not check_first:  # a first upload: nothing pinned yet
            self.scratch.adds_without_effect.add(tx)

        async def add() -> str:
            try:
                return await self.ctx.store.add_and_pin(data)
            except BaseException as exc:
                if not had_no_effect(exc):
                    self.scratch.adds_without_effect.discard(tx)
                raise

        cid = await self.ctx.store_calls.call("add_and_pin", add, transaction_id=tx)
        self.scratch.adds_without_effect.discard(tx)  # this one pinned
        self.scratch.learned_cid[tx] = cid
        if rec.cid is not None and cid != rec.cid:
            raise IntegrityError(f"re-pinned gradient got CID {cid}, journal holds {rec.cid}")
        return cid

    async def upload(self, rec: TransactionRecord, resumed: bool) -> Change:
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
                signed = await self.ctx.chain_calls.call(
                    "sign_submission",
                    functools.partial(
                        self.ctx.chain.sign_submission,
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
            self.ctx.clock.time(),
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
