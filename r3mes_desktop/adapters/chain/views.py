"""Typed reads of the R3mesRounds contract for every role: rounds, submissions with their
verdicts, credits, validators, the submitter index, and block hashes.

A mixin of `ChainClient` (one transport, one contract address, plain calls like the rest
of the adapter): the miner reads its verdicts and credits, the validator walks submissions,
the operator checks what it opened.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_utils.address import to_checksum_address

from r3mes_desktop.adapters.chain.transport import ChainTransport
from r3mes_desktop.core.errors import NetworkError

VERDICT_NONE, VERDICT_ACCEPTED, VERDICT_REJECTED = 0, 1, 2
ZERO_ADDRESS = "0x" + "00" * 20


@dataclass(frozen=True)
class RoundInfo:
    round_id: int
    seed: int
    difficulty: int
    steps: int
    hyperparams: str
    base_model_id: str
    is_open: bool
    deadline: int
    reward: int
    model_version: int


@dataclass(frozen=True)
class VersionInfo:
    version_id: int
    cid: str
    content_hash: bytes
    eval_loss: float  # nats per token
    parent_id: int
    round_id: int
    updates: int
    block_number: int
    aggregator: str


@dataclass(frozen=True)
class SubmissionInfo:
    round_id: int
    miner: str
    cid: str
    gradient_hash: bytes
    pow_nonce: int
    block_number: int
    completed: bool
    openings_cid: str
    verdict: int  # VERDICT_NONE / ACCEPTED / REJECTED
    reason: int
    validator: str

    @property
    def has_verdict(self) -> bool:
        return self.verdict != VERDICT_NONE


class ContractViews:
    """Reads; the class using it provides `_view` (decode errors classified) and `transport`."""

    transport: ChainTransport

    async def _view(self, fn_name: str, *args: Any) -> Any:
        raise NotImplementedError

    async def round_info(self, round_id: int) -> RoundInfo | None:
        raw = await self._view("getRound", round_id)
        seed, difficulty, steps, hyper, base, is_open, exists, deadline, reward, version = raw
        if not exists:
            return None
        return RoundInfo(
            round_id=round_id,
            seed=int(seed),
            difficulty=int(difficulty),
            steps=int(steps),
            hyperparams=str(hyper),
            base_model_id=str(base),
            is_open=bool(is_open),
            deadline=int(deadline),
            reward=int(reward),
            model_version=int(version),
        )

    async def version_info(self, version_id: int) -> VersionInfo | None:
        raw = await self._view("versions", version_id)
        cid, digest, loss, parent, round_id, updates, block, aggregator = raw
        if int(block) == 0:
            return None
        return VersionInfo(
            version_id=version_id,
            cid=str(cid),
            content_hash=bytes(digest),
            eval_loss=int(loss) / 1e6,
            parent_id=int(parent),
            round_id=int(round_id),
            updates=int(updates),
            block_number=int(block),
            aggregator=str(to_checksum_address(aggregator)),
        )

    async def current_version(self) -> int:
        return int(await self._view("currentVersion"))

    async def is_aggregator(self, address: str) -> bool:
        return bool(await self._view("aggregators", address))

    async def submission_info(self, round_id: int, miner: str) -> SubmissionInfo | None:
        raw = await self._view("submissionOf", round_id, miner)
        cid, gradient_hash, pow_nonce, block, completed, openings, verdict, reason, validator = raw
        if int(block) == 0:
            return None
        return SubmissionInfo(
            round_id=round_id,
            miner=miner,
            cid=str(cid),
            gradient_hash=bytes(gradient_hash),
            pow_nonce=int(pow_nonce),
            block_number=int(block),
            completed=bool(completed),
            openings_cid=str(openings),
            verdict=int(verdict),
            reason=int(reason),
            validator=str(to_checksum_address(validator)),
        )

    async def submitters(self, round_id: int, start: int = 0) -> list[str]:
        """Miners who submitted to `round_id`, in order, from index `start`."""
        count = int(await self._view("submissionCount", round_id))
        found = [await self._view("submitterAt", round_id, i) for i in range(start, count)]
        return [str(to_checksum_address(miner)) for miner in found]

    async def last_round_id(self) -> int:
        return int(await self._view("lastRoundId"))

    async def open_round_ids(self) -> list[int]:
        return sorted(int(r) for r in await self._view("openRounds"))

    async def credits_of(self, address: str) -> int:
        return int(await self._view("credits", address))

    async def is_validator(self, address: str) -> bool:
        return bool(await self._view("validators", address))

    async def operator_address(self) -> str:
        return str(to_checksum_address(await self._view("operator")))

    async def contract_version(self) -> str:
        return str(await self._view("VERSION"))

    async def assignment_of(self, round_id: int, miner: str) -> bytes:
        return bytes(await self._view("assignmentOf", round_id, miner))

    async def block_hash(self, number: int) -> bytes | None:
        """The hash of mined block `number`, or None while it is not mined."""
        block = await self.transport.block(number)
        if block is None:
            return None
        raw = bytes.fromhex(str(block["hash"]).removeprefix("0x"))
        if len(raw) != 32:
            raise NetworkError(f"block {number}: malformed hash {block['hash']!r}", service="chain")
        return raw

    async def latest_block(self) -> dict[str, Any]:
        block = await self.transport.block(None)
        if block is None:
            raise NetworkError("the node returned no latest block", service="chain")
        return block
