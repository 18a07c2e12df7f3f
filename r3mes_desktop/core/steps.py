"""The saga's step interfaces.

The coordinator only knows these protocols; the real adapters (mining worker, IPFS client,
chain client) and the test fakes implement them. Every method raises classified errors
(`core.errors`) and must be safe to call again after a crash: the coordinator journals
what each effect needs before calling it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class RoundSpec:
    """A training round as published on chain."""

    round_id: int
    seed: int
    difficulty: int  # PoW difficulty bits, 16..32
    base_model_id: str
    steps: int
    hyperparams: Mapping[str, Any] = field(default_factory=dict)
    deadline: int = 0  # unix seconds after which the contract refuses submissions; 0: none
    reward: int = 0  # credits an accepted submission earns
    model_version: int = 0  # the network adapter to train from (0: the genesis adapter)
    model_cid: str = ""  # its CID and sha256 (hex), from the contract's version record
    model_sha256: str = ""


@dataclass(frozen=True)
class TrainingResult:
    """The LoRA update: safetensors bytes and sha256 of exactly those bytes."""

    data: bytes
    gradient_hash: bytes  # 32 bytes
    tokens: int
    final_loss: float
    metrics: Mapping[str, float] = field(default_factory=dict)


ProgressCallback = Callable[[float, Mapping[str, Any]], None]
"""fraction in [0, 1] and details (step, loss, tokens_per_s, hash_rate, device...)."""


class Trainer(Protocol):
    async def train(
        self, *, transaction_id: str, spec: RoundSpec, progress: ProgressCallback
    ) -> TrainingResult:
        """Train (resuming from this transaction's checkpoint if one exists). A round on a
        model version is also given `adapter_path=`: the verified network adapter's file."""
        ...

    async def discard_checkpoints(self, transaction_id: str) -> None:
        """Drop the transaction's checkpoints once its result is durable elsewhere."""
        ...


class ProofOfWork(Protocol):
    async def solve(
        self,
        *,
        gradient_hash: bytes,
        miner: str,
        round_id: int,
        difficulty: int,
        progress: ProgressCallback,
    ) -> int:
        """Return a nonce valid under the contract's rule; cancellable."""
        ...


class ContentStore(Protocol):
    """IPFS or the devnet's local content-addressed store (same CIDs)."""

    async def add_and_pin(self, data: bytes) -> str:
        """Store and pin `data`; return its CIDv1 (raw leaves, sha2-256), verified locally."""
        ...

    def cid_of(self, data: bytes) -> str:
        """The CID `add_and_pin` gives these bytes, computed locally (no network): the saga
        asks whether it is already pinned before its first add."""
        ...

    async def is_pinned(self, cid: str) -> bool: ...

    async def unpin(self, cid: str) -> None:
        """Idempotent: unpinning content that is not pinned succeeds."""
        ...

    async def cat(self, cid: str) -> bytes: ...


@dataclass(frozen=True)
class SignedSubmission:
    """A locally signed `submitGradient` transaction, journaled before broadcast."""

    raw: bytes
    tx_hash: str  # 0x-prefixed hex
    account_nonce: int


@dataclass(frozen=True)
class Receipt:
    tx_hash: str
    success: bool
    block_number: int


@dataclass(frozen=True)
class OnChainSubmission:
    round_id: int
    miner: str
    cid: str
    gradient_hash: bytes
    pow_nonce: int


class Chain(Protocol):
    @property
    def miner_address(self) -> str: ...

    async def open_rounds(self) -> list[RoundSpec]: ...

    async def sign_submission(
        self, *, round_id: int, cid: str, gradient_hash: bytes, pow_nonce: int
    ) -> SignedSubmission:
        """Sign locally with the next durable account nonce; no network effect."""
        ...

    async def broadcast(self, signed: SignedSubmission) -> None:
        """Send the raw bytes; "already known" counts as sent. Classified errors otherwise."""
        ...

    async def receipt(self, tx_hash: str) -> Receipt | None:
        """The mined receipt, or None if not (yet) mined."""
        ...

    async def wait_receipt(self, tx_hash: str, *, timeout_s: float) -> Receipt:
        """Wait for the receipt; a reverted one raises its decoded, classified reason
        (`AlreadySubmittedError` for a duplicate, `ValidationError` for a bad proof)."""
        ...

    async def submission_of(self, round_id: int) -> OnChainSubmission | None:
        """What the contract stores for (round, this miner)."""
        ...


class SubmissionVerdict(Protocol):
    """What the contract stores of a (round, miner) submission, as far as its verdict goes."""

    @property
    def block_number(self) -> int: ...  # the block that mined the submission
    @property
    def verdict(self) -> int: ...  # 0 none yet, 1 accepted, 2 rejected
    @property
    def reason(self) -> int: ...  # core.workproof.Reason code
    @property
    def validator(self) -> str: ...


class RoundReward(Protocol):
    @property
    def reward(self) -> int: ...  # credits an accepted submission to the round earns


class VerdictSource(Protocol):
    """The chain reads the verdict watcher makes (the chain client's contract views)."""

    async def submission_info(self, round_id: int, miner: str) -> SubmissionVerdict | None:
        """None while the contract holds no submission of `miner` to `round_id`."""
        ...

    async def round_info(self, round_id: int) -> RoundReward | None: ...

    async def latest_block(self) -> Mapping[str, Any]:
        """The chain's head: {"number", "hash", "timestamp"}."""
        ...


class PublishedVersion(Protocol):
    """What the contract stores of a model version (the chain client's `VersionInfo`)."""

    @property
    def version_id(self) -> int: ...
    @property
    def cid(self) -> str: ...
    @property
    def content_hash(self) -> bytes: ...  # sha256 of the adapter's bytes
    @property
    def eval_loss(self) -> float: ...  # held-out loss, nats per token
    @property
    def parent_id(self) -> int: ...  # the version it was trained from
    @property
    def round_id(self) -> int: ...  # the closed round whose accepted updates it aggregates
    @property
    def updates(self) -> int: ...  # how many accepted updates it averages
    @property
    def block_number(self) -> int: ...
    @property
    def aggregator(self) -> str: ...


class ModelVersionSource(Protocol):
    """The chain reads the model-version watcher makes (the chain client's contract views)."""

    async def current_version(self) -> int:
        """The newest published version (0: none yet, rounds train on the genesis adapter)."""
        ...

    async def version_info(self, version_id: int) -> PublishedVersion | None:
        """None for a version the contract does not hold (the genesis one included)."""
        ...


class ModelStore(Protocol):
    async def fetch(self, cid: str, sha256: str) -> str:
        """A local path of the model version's bytes, verified against `sha256` (and the
        CID by the content store); cached, so a resumed round fetches nothing again.
        Raises `IntegrityError` for bytes that are not the named version."""
        ...


class TaskApi(Protocol):
    async def complete_task(self, *, round_id: int) -> None:
        """Mark this miner's task complete; idempotent."""
        ...
