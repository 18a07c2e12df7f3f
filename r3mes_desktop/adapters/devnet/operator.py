"""The devnet's round operator: deploys the contract, funds the dev miner, keeps rounds open.

On a real network an operator service publishes rounds; on the devnet this object plays that
part in-process so the miner always has work: whenever fewer than `keep_open` rounds are
open for the miner, it opens new ones, and it closes rounds the miner is done with so the
contract's bounded open-round list never fills. It signs with eth-tester's first genesis
key (a public test key) and sends through the devnet EVM, so its transactions are logged and
replayed like the miner's.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import rlp
from eth_account import Account
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from r3mes_desktop.adapters.chain import artifact
from r3mes_desktop.adapters.chain.abi import decode_output, encode_call
from r3mes_desktop.adapters.chain.transport import ChainTransport
from r3mes_desktop.core.clock import SYSTEM_CLOCK, Clock
from r3mes_desktop.core.errors import PermanentError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RoundTemplate:
    """What the operator puts in each new round (tiny rounds for tests)."""

    difficulty: int = 16
    steps: int = 20
    base_model_id: str = "r3mes-devnet-lm-v1"
    hyperparams: Mapping[str, Any] = field(default_factory=lambda: {"preset": "default"})
    reward: int = 100  # credits per accepted submission


class DevnetOperator:
    def __init__(
        self,
        evm: ChainTransport,
        *,
        key: bytes,
        template: RoundTemplate,
        keep_open: int = 3,
        clock: Clock = SYSTEM_CLOCK,
        round_ttl_s: float = 900.0,
    ) -> None:
        """`evm` is any transport: the devnet's EVM, or a ganache node in integration tests.

        `round_ttl_s`: a round still open for the miner after this long is closed and
        replaced. The miner never signs twice for a round, so a round whose signed submission
        was rolled back stays open for it forever; without the TTL three such rounds would
        leave the devnet miner idle with nothing to mine.
        """
        self._evm = evm
        self._clock = clock
        self._account = Account.from_key(key)
        self.address = str(self._account.address)
        self.template = template
        self.keep_open = keep_open
        self.contract_address = str(
            to_checksum_address(keccak(rlp.encode([bytes.fromhex(self.address[2:]), 0]))[12:])
        )
        self._lock = asyncio.Lock()
        self.round_ttl_s = round_ttl_s
        self._first_seen: dict[int, float] = {}
        # Told the ids of rounds a pass opened (the runtime wakes the miner: it need not
        # poll the chain often to start them at once).
        self.on_opened: Callable[[list[int]], None] | None = None

    async def _send(
        self, data: bytes, *, to: str | None, value: int = 0, gas: int = 500_000
    ) -> None:
        async with self._lock:
            nonce = await self._evm.nonce(self.address)
            max_fee, tip = await self._evm.fee_params()
            tx: dict[str, Any] = {
                "type": 2,
                "chainId": await self._evm.chain_id(),
                "nonce": nonce,
                "data": data,
                "value": value,
                "gas": gas,
                "maxFeePerGas": max_fee,
                "maxPriorityFeePerGas": tip,
            }
            if to is not None:
                tx["to"] = to
            # Signing is milliseconds of Python (RLP, keccak): not on the event loop.
            signed = await asyncio.to_thread(self._account.sign_transaction, tx)
            tx_hash = await self._evm.send_raw(bytes(signed.raw_transaction))
            receipt = await self._evm.receipt(tx_hash)
            for _ in range(100):  # instant on the devnet and ganache; a short wait elsewhere
                if receipt is not None:
                    break
                await self._clock.sleep(0.1)
                receipt = await self._evm.receipt(tx_hash)
        if receipt is None or receipt["status"] != 1:
            raise PermanentError(f"devnet operator transaction {tx_hash} failed", service="chain")

    async def deploy_if_needed(self) -> str:
        if not await self._evm.get_code(self.contract_address):
            await self._send(artifact.load().bytecode, to=None, gas=3_000_000)
            log.info("devnet: contract deployed at %s", self.contract_address)
        return self.contract_address

    async def fund(self, address: str, *, at_least_wei: int = 10 * 10**18) -> None:
        if await self._evm.balance(address) < at_least_wei:
            await self._send(b"", to=address, value=100 * 10**18, gas=21_000)

    async def _view(self, fn_name: str, *args: Any) -> Any:
        tx = {"to": self.contract_address, "data": encode_call(fn_name, *args)}
        return decode_output(fn_name, await self._evm.call(tx))

    async def open_round(self, round_id: int | None = None) -> int:
        if round_id is None:
            round_id = int(await self._view("lastRoundId")) + 1
        seed = int.from_bytes(hashlib.sha256(b"r3mes-devnet-round:%d" % round_id).digest()[:8])
        version = int(await self._view("currentVersion"))  # rounds train on the newest model
        t = self.template
        data = encode_call(
            "openRound",
            round_id,
            seed,
            t.difficulty,
            t.steps,
            json.dumps(dict(t.hyperparams), sort_keys=True),
            t.base_model_id,
            0,  # no deadline: the devnet closes rounds itself
            t.reward,
            version,
        )
        await self._send(data, to=self.contract_address)
        log.info(
            "devnet: opened round %d (difficulty %d, model version %d)",
            round_id,
            t.difficulty,
            version,
        )
        return round_id

    async def add_validator(self, address: str) -> None:
        """Appoint `address` (idempotent: an appointed validator costs no transaction)."""
        if not await self._view("validators", address):
            await self._send(encode_call("addValidator", address), to=self.contract_address)
            log.info("devnet: validator %s appointed", address)

    async def add_aggregator(self, address: str) -> None:
        """Appoint `address` to publish model versions (idempotent)."""
        if not await self._view("aggregators", address):
            await self._send(encode_call("addAggregator", address), to=self.contract_address)
            log.info("devnet: aggregator %s appointed", address)

    async def close_round(self, round_id: int) -> None:
        await self._send(encode_call("closeRound", round_id), to=self.contract_address)

    async def ensure_rounds(self, miner: str) -> list[int]:
        """Open rounds until `keep_open` are open for `miner`; close the ones it finished."""
        open_ids = set(await self._view("openRounds"))
        todo = set(await self._view("openRoundsFor", miner))
        now = self._clock.monotonic()
        for round_id in todo:
            self._first_seen.setdefault(round_id, now)
        expired = {r for r in todo if now - self._first_seen[r] > self.round_ttl_s}
        todo -= expired
        for done in sorted(open_ids - todo):
            await self.close_round(done)
            self._first_seen.pop(done, None)
        opened = []
        for _ in range(self.keep_open - len(todo)):
            opened.append(await self.open_round())
        if opened and self.on_opened is not None:
            self.on_opened(opened)
        return opened

    async def run(
        self, miner: str, *, interval_s: float = 5.0, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        """Keep rounds available until cancelled; a failed pass is logged and retried."""
        while True:
            try:
                await self.ensure_rounds(miner)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("devnet operator pass failed")
            await clock.sleep(interval_s)
