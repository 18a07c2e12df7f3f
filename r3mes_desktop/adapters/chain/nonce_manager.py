"""Which account nonce the next signature takes, and keeping the account's nonces gap-free.

A node mines an account's transactions in nonce order, so a nonce held by a signature that
will never be mined (refused, rolled back before its broadcast, forgotten by the node)
parks every later submission behind it. This module picks nonces from the node's pending
count and the durable `NonceStore`, reuses holes, replaces stale unsent signatures, fills
holes with empty transfers to ourselves when nothing new is signed, gives back the nonce of
bytes a node refused, and proves from the chain (not the node's word) that a signature
whose nonce was taken can never be mined.

Plain node calls, like the chain client's: the caller of the client method (the saga's
`ServiceCaller`) owns retry, breaker and timeout, and a retry re-runs the whole method. So
every method here is safe to re-run: a stored signature for the same payload is returned
again (`live_signature`), and a filler signed by an interrupted pass is re-sent by the next
pass instead of being taken for a live transaction.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any

from eth_account.signers.local import LocalAccount

from r3mes_desktop.adapters.chain.nonces import NonceStore, SignedRecord
from r3mes_desktop.adapters.chain.reverts import NonceConsumedError, rejection_error
from r3mes_desktop.adapters.chain.transport import ChainTransport, TxRejected
from r3mes_desktop.core.clock import Clock
from r3mes_desktop.core.errors import NetworkError

log = logging.getLogger(__name__)
FILLER_PREFIX = "nonce-filler:"


class NonceManager:
    """Nonces for one account on one chain; `lock` serialises pick-and-sign."""

    def __init__(
        self,
        *,
        transport: ChainTransport,
        account: LocalAccount,
        nonces: NonceStore,
        chain_id: int,
        clock: Clock,
        stale_nonce_s: float,
    ) -> None:
        self.transport = transport
        self._account = account
        self.address = str(account.address)
        self._nonces = nonces
        self.chain_id = chain_id
        self._clock = clock
        self.stale_nonce_s = stale_nonce_s
        self.lock = asyncio.Lock()

    def payload_key(self, contract_address: str, data: bytes) -> str:
        """What makes two signing requests "the same call": chain, sender, contract, data."""
        h = hashlib.sha256()
        for part in (str(self.chain_id), self.address.lower(), contract_address.lower()):
            h.update(part.encode() + b"\0")
        h.update(data)
        return h.hexdigest()

    async def mark(self, tx_hash: str, state: str) -> None:
        await asyncio.to_thread(self._nonces.mark, tx_hash, state)

    async def live_signature(self, key: str) -> SignedRecord | None:
        """The stored signature for this payload if its bytes can still be (or were) mined."""
        existing = await asyncio.to_thread(self._nonces.find_payload, key)
        if existing is None or not await self._still_valid(existing):
            return None
        return existing

    async def _still_valid(self, record: SignedRecord) -> bool:
        if await self.transport.receipt(record.tx_hash) is not None:
            return True
        if record.nonce >= await self.transport.nonce(self.address):
            return True
        if await self.transport.transaction(record.tx_hash):
            return True
        await self.mark(record.tx_hash, "superseded")
        return False

    async def give_back(self, tx_hash: str) -> None:
        """The node refused these bytes: they sit in no pool and cannot be mined, so their
        nonce is a hole for the next signature now, not after `stale_nonce_s` with every
        later submission stuck behind the gap."""
        await self.mark(tx_hash, "superseded")

    async def prove_void(self, tx_hash: str, nonce: int) -> None:
        """The node says our nonce is too low: return if these bytes are (being) mined,
        raise NonceConsumedError if the chain proves they never can be, else a NetworkError.

        The proof reads the confirmed (latest-block) count first, then the receipt: once a
        block holds nonce N of this account, N is taken for good, and if the taker were our
        bytes their receipt would already exist. A node's word alone is not enough (a
        misbehaving node or an injected fault says "nonce too low" for a live nonce, and
        signing again then could land the same call twice).
        """
        confirmed = await self.transport.confirmed_nonce(self.address)
        if await self.transport.receipt(tx_hash) is not None:
            return
        if nonce >= confirmed:
            raise NetworkError(
                f"{self.transport.description} refused transaction {tx_hash} as nonce too "
                f"low, but the latest block counts {confirmed} transactions of {self.address}; "
                "waiting for the chain to settle it",
                service="chain",
            )
        await self.mark(tx_hash, "superseded")
        raise NonceConsumedError(
            f"transaction {tx_hash} can never be mined: nonce {nonce} of {self.address} was "
            f"used by another transaction (the latest block counts {confirmed}) and no "
            "receipt exists for it",
            service="chain",
        )

    async def pick(self) -> tuple[int, str | None]:
        """(nonce, tx hash it supersedes): max(node pending count, durable next), filling
        holes and replacing stale signed-but-never-sent transactions so one abandoned
        signature cannot block forever."""
        pending = await self.transport.nonce(self.address)
        stored = await asyncio.to_thread(self._nonces.next_nonce, self.address, self.chain_id)
        if stored <= pending:
            return pending, None
        live = await asyncio.to_thread(
            self._nonces.unlanded_from, self.address, self.chain_id, pending
        )
        used = {r.nonce for r in live}
        for n in range(pending, stored):
            if n not in used:
                return n, None
        lowest = live[0]
        if await self._abandoned(lowest):
            log.warning(
                "nonce %d: replacing a signed transaction never seen by the node", lowest.nonce
            )
            return lowest.nonce, lowest.tx_hash
        return stored, None

    async def sign_record(
        self, fields: dict[str, Any], *, nonce: int, key: str, supersede: str | None
    ) -> SignedRecord:
        """Sign a type-2 transaction with `nonce` and store it (advancing the durable next
        nonce) before anyone may broadcast it: intent before effect."""
        signed = await asyncio.to_thread(  # scrypt-free but ~ms of ECDSA: off the loop
            self._account.sign_transaction,
            {"type": 2, "chainId": self.chain_id, "nonce": nonce, "value": 0, **fields},
        )
        record = SignedRecord(
            tx_hash="0x" + bytes(signed.hash).hex(),
            nonce=nonce,
            payload_key=key,
            raw=bytes(signed.raw_transaction),
            created=self._clock.time(),
            state="signed",
        )
        await asyncio.to_thread(
            self._nonces.record,
            account=self.address,
            chain_id=self.chain_id,
            record=record,
            supersede=supersede,
        )
        return record

    async def fill_gaps(self) -> int:
        """Send a zero-value transfer to ourselves for every nonce below our highest live
        signature that nothing live will use (a signature refused or abandoned before its
        broadcast, or one never seen by the node after `stale_nonce_s`).

        Why: `pick` fills holes only when something new is signed, and a miner that signs
        nothing new (stopped, no open round) would wait forever. A filler an earlier pass
        signed but could not send is sent again. Returns how many fillers were sent."""
        sent = 0
        async with self.lock:
            pending = await self.transport.nonce(self.address)
            live = await asyncio.to_thread(
                self._nonces.unlanded_from, self.address, self.chain_id, pending
            )
            if not live:
                return 0
            by_nonce = {r.nonce: r for r in live}
            top = max(by_nonce)
            fees: tuple[int, int] | None = None
            for n in range(pending, top):
                holder = by_nonce.get(n)
                if holder is not None and holder.payload_key.startswith(FILLER_PREFIX):
                    await self._send_filler(holder)
                    sent += 1
                    continue
                if holder is not None and not await self._abandoned(holder):
                    continue
                if fees is None:  # one fee reading serves every filler of this pass
                    fees = await self.transport.fee_params()
                max_fee, tip = fees
                filler = await self.sign_record(
                    {
                        "to": self.address,
                        "data": b"",
                        "gas": 21_000,
                        "maxFeePerGas": max_fee,
                        "maxPriorityFeePerGas": min(tip, max_fee),
                    },
                    nonce=n,
                    key=f"{FILLER_PREFIX}{self.chain_id}:{n}",
                    supersede=None if holder is None else holder.tx_hash,
                )
                await self._send_filler(filler)
                sent += 1
        if sent:
            log.warning("filled %d nonce gap(s) below nonce %d with empty transfers", sent, top)
        return sent

    async def _abandoned(self, record: SignedRecord) -> bool:
        """A live signature the node has never seen, older than `stale_nonce_s`."""
        if self._clock.time() - record.created < self.stale_nonce_s:
            return False
        return not await self.transport.transaction(record.tx_hash)

    async def _send_filler(self, record: SignedRecord) -> None:
        try:
            await self.transport.send_raw(record.raw)
        except TxRejected as exc:
            if exc.kind != "already_known":
                await self.mark(record.tx_hash, "superseded")
                raise rejection_error(
                    exc.kind, exc.message, where=self.transport.description, account=self.address
                ) from None
