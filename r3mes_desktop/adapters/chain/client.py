"""The chain client: `core.steps.Chain` and `TaskApi` over the R3mesRounds contract.

Signing is local (eth-account) and deterministic per call: `NonceStore` remembers each signed
transaction by payload, so signing the same submission after a crash yields the same bytes
and hash that the journal may already hold; which nonce a signature takes is the
`NonceManager`'s. The transport (a JSON-RPC node with URL fallback, or the devnet's
in-process EVM) turns node failures into classified errors, and reverts are decoded into
what they mean for the miner (`reverts.py`).

An adapter with plain calls: no retry, breaker or timeout here beyond the transport's
socket timeout. The caller of each method (the saga's `ServiceCaller`s, the miner's
listing, the runtime's connect step) owns all three, so one failing node call costs exactly
the policy's attempts and each retry is journaled under its transaction. A retry re-runs a
whole method, so each one is safe to re-run: signing returns the stored signature of the
same payload, and a broadcast of bytes the node already holds counts as sent.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_utils.address import is_hex_address, to_checksum_address

from r3mes_desktop.adapters.chain.abi import decode_call, decode_output, encode_call
from r3mes_desktop.adapters.chain.nonce_manager import NonceManager
from r3mes_desktop.adapters.chain.nonces import NonceStore
from r3mes_desktop.adapters.chain.reverts import (
    DUPLICATE,
    rejection_error,
    revert_error,
)
from r3mes_desktop.adapters.chain.transport import CallReverted, ChainTransport, TxRejected
from r3mes_desktop.adapters.chain.views import ContractViews
from r3mes_desktop.core.clock import SYSTEM_CLOCK, Clock
from r3mes_desktop.core.errors import (
    AuthenticationError,
    R3mesError,
    ResourceError,
    TimeoutNetworkError,
    ValidationError,
)
from r3mes_desktop.core.steps import OnChainSubmission, Receipt, RoundSpec, SignedSubmission

log = logging.getLogger(__name__)
UINT64_MAX = 2**64 - 1
MAX_CID_LEN = 128
_CID_RE = re.compile(r"[A-Za-z0-9]{1,128}")


def checked_address(value: str, field: str) -> str:
    if not isinstance(value, str) or not is_hex_address(value):
        raise ValidationError(
            f"{field}: expected a 0x-prefixed 40-hex-digit address, got {value!r}"
        )
    return str(to_checksum_address(value))


def _uint64(value: int, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= UINT64_MAX:
        raise ValidationError(f"{field}: expected an integer in 0..2**64-1, got {value!r}")
    return value


class ChainClient(ContractViews):
    """Implements `Chain` and `TaskApi`, and reads for every role (`ContractViews`).
    Build with `await ChainClient.connect(...)`."""

    def __init__(
        self,
        *,
        transport: ChainTransport,
        account: LocalAccount,
        contract_address: str,
        nonces: NonceStore,
        chain_id: int,
        clock: Clock = SYSTEM_CLOCK,
        gas_cap: int = 800_000,
        max_fee_cap_wei: int | None = None,
        poll_s: float = 1.0,
        stale_nonce_s: float = 600.0,
        task_timeout_s: float = 120.0,
    ) -> None:
        self._address = str(account.address)
        self.contract_address = checked_address(contract_address, "contract_address")
        self._nonce_manager = NonceManager(
            transport=transport,
            account=account,
            nonces=nonces,
            chain_id=chain_id,
            clock=clock,
            stale_nonce_s=stale_nonce_s,
        )
        self.chain_id = chain_id
        self._clock = clock
        self.gas_cap = gas_cap
        self.max_fee_cap_wei = max_fee_cap_wei
        self.poll_s = poll_s
        self.task_timeout_s = task_timeout_s
        self._round_specs: dict[int, RoundSpec | None] = {}  # listed rounds, read once each

    @classmethod
    async def connect(
        cls,
        *,
        transport: ChainTransport,
        account: LocalAccount,
        contract_address: str,
        nonces: NonceStore,
        expected_chain_id: int | None = None,
        **options: Any,
    ) -> ChainClient:
        """Check the node's chain id and that the contract exists, then return a client.

        Plain calls like every method: the caller wraps `connect` in its `ServiceCaller`
        (a retry simply connects again)."""
        address = checked_address(contract_address, "contract_address")
        where = transport.description
        chain_id = await transport.chain_id()
        if expected_chain_id is not None and chain_id != expected_chain_id:
            raise ValidationError(
                f"chain_id: {where} is on chain {chain_id}, expected {expected_chain_id}; "
                "wrong network or wrong RPC URL",
                service="chain",
            )
        code = await transport.get_code(address)
        if not code:
            raise ValidationError(
                f"contract_address: no contract code at {address} on {where} (chain {chain_id}); "
                "check the address and the network",
                service="chain",
            )
        return cls(
            transport=transport,
            account=account,
            contract_address=address,
            nonces=nonces,
            chain_id=chain_id,
            **options,
        )

    @property
    def miner_address(self) -> str:
        return self._address

    @property
    def description(self) -> str:
        return self.transport.description

    @property
    def stale_nonce_s(self) -> float:
        """How long a signature the node has never seen stays live (then its nonce is
        reused); settable (the chaos harness shortens it)."""
        return self._nonce_manager.stale_nonce_s

    @stale_nonce_s.setter
    def stale_nonce_s(self, seconds: float) -> None:
        self._nonce_manager.stale_nonce_s = seconds

    @property
    def transport(self) -> ChainTransport:
        """The node this client talks to; replacing it (a fault plan's wrapper, a test's
        refusing node) replaces it for the nonce manager too."""
        return self._nonce_manager.transport

    @transport.setter
    def transport(self, transport: ChainTransport) -> None:
        self._nonce_manager.transport = transport

    async def _view(self, fn_name: str, *args: Any) -> Any:
        tx = {"to": self.contract_address, "data": encode_call(fn_name, *args)}
        data = await self.transport.call(tx)
        try:
            return decode_output(fn_name, data)
        except Exception as exc:
            raise ValidationError(
                f"{self.description}: undecodable result from {fn_name} ({type(exc).__name__}); "
                "is contract_address the R3mesRounds contract?",
                service="chain",
            ) from None

    async def open_rounds(self) -> list[RoundSpec]:
        """Open rounds this miner has not submitted to yet (a round accepts one submission).

        One `openRoundsFor` read per call; a round's spec is read once and kept while the
        round stays listed: the contract never changes a round after `openRound` (only
        `isOpen`, and `openRoundsFor` lists open rounds only). Reading every listed round's
        spec on every poll cost one node request per open round per poll.
        """
        ids = sorted(int(r) for r in await self._view("openRoundsFor", self._address))
        known = self._round_specs
        for stale in set(known) - set(ids):  # closed or submitted to: never listed again
            del known[stale]
        specs = []
        for round_id in ids:
            if round_id not in known:
                known[round_id] = await self._read_round(round_id)
            spec = known[round_id]
            if spec is not None:
                specs.append(spec)
        return specs

    async def _read_round(self, round_id: int) -> RoundSpec | None:
        """The round's spec; None for a round the miner cannot run (skipped while listed)."""
        (
            seed,
            difficulty,
            steps,
            hyper,
            base_model,
            is_open,
            exists,
            deadline,
            reward,
            version,
        ) = await self._view("getRound", round_id)
        if not (is_open and exists):  # closed since it was listed: never listed again
            return None
        try:
            params = json.loads(hyper) if hyper else {}
            if not isinstance(params, dict):
                raise ValueError("not an object")
        except ValueError:
            log.warning("round %s: hyperparams are not a JSON object; round skipped", round_id)
            return None
        return RoundSpec(
            round_id=round_id,
            seed=int(seed),
            difficulty=int(difficulty),
            base_model_id=str(base_model),
            steps=int(steps),
            hyperparams=params,
            deadline=int(deadline),
            reward=int(reward),
            **await self._model_fields(int(version)),
        )

    async def _model_fields(self, version: int) -> dict[str, Any]:
        if version == 0:
            return {}
        found = await self.version_info(version)
        if found is None:
            return {"model_version": version}  # training refuses a plan naming no adapter
        return {
            "model_version": version,
            "model_cid": found.cid,
            "model_sha256": found.content_hash.hex(),
        }

    async def _submission_tuple(self, round_id: int) -> tuple[Any, ...] | None:
        raw = await self._view("submissionOf", round_id, self._address)
        return None if int(raw[3]) == 0 else tuple(raw)

    async def submission_of(self, round_id: int) -> OnChainSubmission | None:
        raw = await self._submission_tuple(_uint64(round_id, "round_id"))
        if raw is None:
            return None
        cid, gradient_hash, pow_nonce = raw[:3]
        return OnChainSubmission(
            round_id=round_id,
            miner=self._address,
            cid=str(cid),
            gradient_hash=bytes(gradient_hash),
            pow_nonce=int(pow_nonce),
        )

    async def sign_submission(
        self, *, round_id: int, cid: str, gradient_hash: bytes, pow_nonce: int
    ) -> SignedSubmission:
        _uint64(round_id, "round_id")
        _uint64(pow_nonce, "pow_nonce")
        if not isinstance(cid, str) or not _CID_RE.fullmatch(cid):
            raise ValidationError(f"cid: expected 1..{MAX_CID_LEN} base-encoded characters")
        if not isinstance(gradient_hash, bytes) or len(gradient_hash) != 32:
            raise ValidationError("gradient_hash: expected exactly 32 bytes")
        data = encode_call("submitGradient", round_id, cid, gradient_hash, pow_nonce)
        return await self._sign(
            data, what=f"submitGradient for round {round_id}", round_id=round_id
        )

    async def sign_call(self, fn_name: str, *args: Any, round_id: int = -1) -> SignedSubmission:
        """Sign a call to the contract (a validator's verdict, an operator's round) with the
        same once-per-payload discipline as a submission: the caller journals the result
        before it broadcasts."""
        what = f"{fn_name} for round {round_id}" if round_id >= 0 else fn_name
        return await self._sign(encode_call(fn_name, *args), what=what, round_id=round_id)

    async def _sign(self, data: bytes, *, what: str, round_id: int) -> SignedSubmission:
        """Sign a call to the contract once: the same payload signed again (a retry, a
        restart) returns the stored bytes while they can still be mined."""
        nonces = self._nonce_manager
        key = nonces.payload_key(self.contract_address, data)
        async with nonces.lock:
            existing = await nonces.live_signature(key)
            if existing is not None:
                return SignedSubmission(existing.raw, existing.tx_hash, existing.nonce)
            tx = {"from": self._address, "to": self.contract_address, "data": data}
            try:
                estimate = await self.transport.estimate_gas(tx)
            except CallReverted as exc:
                raise await self._revert(exc.reason, what=what, round_id=round_id) from None
            if estimate > self.gas_cap:
                raise ValidationError(
                    f"{what}: gas estimate {estimate} exceeds the cap {self.gas_cap} (gas_cap)"
                )
            gas = min(self.gas_cap, estimate + estimate // 5 + 10_000)
            max_fee, tip = await self.transport.fee_params()
            if self.max_fee_cap_wei is not None and max_fee > self.max_fee_cap_wei:
                raise ResourceError(
                    f"{what}: fee {max_fee} wei/gas is above the cap {self.max_fee_cap_wei}; "
                    "waiting for cheaper gas",
                    service="chain",
                )
            nonce, supersede = await nonces.pick()
            record = await nonces.sign_record(
                {
                    "to": self.contract_address,
                    "data": data,
                    "gas": gas,
                    "maxFeePerGas": max_fee,
                    "maxPriorityFeePerGas": min(tip, max_fee),
                },
                nonce=nonce,
                key=key,
                supersede=supersede,
            )
            log.info("signed %s: tx %s nonce %d gas %d", what, record.tx_hash, nonce, gas)
            return SignedSubmission(record.raw, record.tx_hash, nonce)

    async def fill_nonce_gaps(self) -> int:
        """Fill the holes below our highest live signature (see `NonceManager.fill_gaps`);
        returns how many empty transfers were sent."""
        return await self._nonce_manager.fill_gaps()

    async def broadcast(self, signed: SignedSubmission) -> None:
        """Send the signed bytes unless they are already mined (after a crash the journal
        replays broadcasts; ganache 7 even re-executes a resent mined transaction)."""
        if await self.receipt(signed.tx_hash) is not None:
            return
        try:
            try:
                await self.transport.send_raw(signed.raw)
            except TxRejected as exc:  # a node without a queue refuses bytes behind a hole
                if exc.kind != "nonce_gap" or not await self.fill_nonce_gaps():
                    raise
                await self.transport.send_raw(signed.raw)
        except AuthenticationError:
            await self._nonce_manager.give_back(signed.tx_hash)  # HTTP 401/403: never forwarded
            raise
        except TxRejected as exc:
            if exc.kind == "already_known":
                # A node with a queue keeps bytes behind a hole and answers a re-send so:
                # they are mined only once the holes below them are filled. The bytes are
                # in; a filler that fails now is tried again at the next re-send.
                try:
                    await self.fill_nonce_gaps()
                except R3mesError as fill_error:
                    log.warning("could not fill nonce gaps yet: %s", fill_error)
                return
            if exc.kind in ("insufficient_funds", "invalid_signature"):
                await self._nonce_manager.give_back(signed.tx_hash)
            if exc.kind == "nonce_too_low":
                await self._nonce_manager.prove_void(signed.tx_hash, signed.account_nonce)
                return
            raise rejection_error(
                exc.kind, exc.message, where=self.description, account=self._address
            ) from None

    async def receipt(self, tx_hash: str) -> Receipt | None:
        raw = await self.transport.receipt(tx_hash)
        if raw is None:
            return None
        return Receipt(tx_hash=tx_hash, success=raw["status"] == 1, block_number=raw["blockNumber"])

    async def wait_receipt(self, tx_hash: str, *, timeout_s: float) -> Receipt:
        deadline = self._clock.monotonic() + timeout_s
        while True:
            found = await self.receipt(tx_hash)
            if found is not None:
                if found.success:
                    await self._nonce_manager.mark(tx_hash, "landed")
                    return found
                raise await self._failure(tx_hash)
            remaining = deadline - self._clock.monotonic()
            if remaining <= 0:
                raise TimeoutNetworkError(
                    f"transaction {tx_hash} was not mined within {timeout_s:g}s on "
                    f"{self.description}",
                    service="chain",
                )
            await self._clock.sleep(min(self.poll_s, remaining))

    async def _failure(self, tx_hash: str) -> Exception:
        """Why a mined transaction reverted: re-run its call to read the reason."""
        await self._nonce_manager.mark(tx_hash, "landed")
        tx = await self.transport.transaction(tx_hash)
        round_id = -1
        name = "transaction"
        if tx is not None:
            try:
                name, args = decode_call(tx["data"])
                round_id = int(args.get("roundId", -1))
            except Exception:
                name = "transaction"
        what = f"{name} {tx_hash}" + (f" for round {round_id}" if round_id >= 0 else "")
        if name == "submitGradient" and await self._submission_tuple(round_id) is not None:
            return await self._revert(DUPLICATE, what=what, round_id=round_id)
        reason = None
        if tx is not None:
            try:
                await self.transport.call(
                    {"from": self._address, "to": tx["to"], "data": tx["data"]}
                )
            except CallReverted as exc:
                reason = exc.reason
            except Exception as exc:  # the replay is best effort: the revert itself is known
                log.info("could not replay %s for its reason: %s", tx_hash, type(exc).__name__)
        return await self._revert(reason, what=what, round_id=round_id)

    async def _revert(self, reason: str | None, *, what: str, round_id: int) -> Exception:
        stored = None
        if (reason or "").strip() == DUPLICATE and round_id >= 0:
            existing = await self.submission_of(round_id)
            stored = existing.cid if existing else None
        return revert_error(reason, what=what, stored_cid=stored)

    async def complete_task(self, *, round_id: int, openings_cid: str = "") -> None:
        """Idempotent: returns at once when the contract already marks the task complete.

        `openings_cid`: the committed training states the submission's block sampled (see
        `adapters.mining.trace`); validators reject a submission that never opens them."""
        _uint64(round_id, "round_id")
        if openings_cid and not _CID_RE.fullmatch(openings_cid):
            raise ValidationError(
                f"openings_cid: expected 1..{MAX_CID_LEN} base-encoded characters"
            )
        raw = await self._submission_tuple(round_id)
        if raw is None:
            raise ValidationError(
                f"round_id: no submission by {self._address} in round {round_id}; "
                "nothing to complete",
                service="chain",
            )
        if raw[4]:
            return
        what = f"completeTask for round {round_id}"
        call = (
            encode_call("completeTask", round_id, openings_cid)
            if openings_cid
            else encode_call("completeTask", round_id)
        )
        signed = await self._sign(call, what=what, round_id=round_id)
        await self.broadcast(signed)
        await self.wait_receipt(signed.tx_hash, timeout_s=self.task_timeout_s)

    async def close(self) -> None:
        await self.transport.close()
