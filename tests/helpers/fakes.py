"""In-process and file-backed fakes of the saga's steps (core.steps protocols).

Each fake records its calls and fails on command: `faults.fail("add_and_pin", exc, times=2)`
(or `times=None` for forever). The file-backed variants keep their world (pins, chain
state, completions) in one sqlite file, so a process restarted after SIGKILL sees the same
"chain" and "store"; `crash_hook` lets the crash test kill the process inside an effect.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from r3mes_desktop.core.clock import Clock
from r3mes_desktop.core.errors import AlreadySubmittedError, ValidationError
from r3mes_desktop.core.events import Event, EventBus
from r3mes_desktop.core.steps import (
    OnChainSubmission,
    ProgressCallback,
    Receipt,
    RoundSpec,
    SignedSubmission,
    TrainingResult,
)

MINER = "0x" + "ab" * 20
VALIDATOR = "0x" + "cd" * 20
AGGREGATOR = "0x" + "ef" * 20

CrashHook = Callable[[str, str], None]
"""crash_hook(operation, "before" | "after"): may SIGKILL the process (crash test)."""


def _no_crash(operation: str, phase: str) -> None:
    return None


@dataclass
class Faults:
    """A failure plan per operation name; each failure consumes one planned raise."""

    plans: dict[str, list[list[Any]]] = field(default_factory=dict)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def fail(self, operation: str, exc: BaseException, *, times: int | None = 1) -> None:
        self.plans.setdefault(operation, []).append([exc, times])

    def clear(self, operation: str | None = None) -> None:
        if operation is None:
            self.plans.clear()
        else:
            self.plans.pop(operation, None)

    def hit(self, operation: str, **details: Any) -> None:
        """Record the call and raise the next planned failure for it, if any."""
        self.calls.append((operation, details))
        plans = self.plans.get(operation)
        while plans:
            exc, times = plans[0]
            if times is None:
                raise exc
            if times > 0:
                plans[0][1] = times - 1
                if plans[0][1] == 0:
                    plans.pop(0)
                raise exc
            plans.pop(0)

    def count(self, operation: str) -> int:
        return sum(1 for name, _ in self.calls if name == operation)


def gradient_for(spec: RoundSpec) -> bytes:
    """Deterministic "safetensors" bytes per round: re-training yields the same bytes."""
    return json.dumps({"round": spec.round_id, "seed": spec.seed, "lora": [1, 2, 3]}).encode()


def cid_for(data: bytes) -> str:
    return "bafkrei" + hashlib.sha256(data).hexdigest()[:40]


class BlockingTrainer:
    """Training that never ends: the transaction stays in TRAINING until cancelled."""

    async def train(
        self, *, transaction_id: str, spec: RoundSpec, progress: ProgressCallback
    ) -> TrainingResult:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def discard_checkpoints(self, transaction_id: str) -> None:
        return None


class FakeTrainer:
    def __init__(
        self,
        faults: Faults | None = None,
        *,
        clock: Clock | None = None,
        duration_s: float = 0.0,
        crash_hook: CrashHook = _no_crash,
    ) -> None:
        self.faults = faults or Faults()
        self.clock = clock
        self.duration_s = duration_s
        self.crash_hook = crash_hook
        self.discarded: list[str] = []

    async def train(
        self, *, transaction_id: str, spec: RoundSpec, progress: ProgressCallback
    ) -> TrainingResult:
        self.crash_hook("train", "before")
        progress(0.5, {"step": max(1, spec.steps // 2)})  # got halfway, then maybe fails
        self.faults.hit("train", transaction_id=transaction_id, round_id=spec.round_id)
        if self.clock is not None and self.duration_s:
            await self.clock.sleep(self.duration_s)
        data = gradient_for(spec)
        progress(1.0, {"step": spec.steps})
        self.crash_hook("train", "after")
        return TrainingResult(
            data=data, gradient_hash=hashlib.sha256(data).digest(), tokens=10, final_loss=0.5
        )

    async def discard_checkpoints(self, transaction_id: str) -> None:
        self.faults.hit("discard_checkpoints", transaction_id=transaction_id)
        self.discarded.append(transaction_id)


class FakePow:
    def __init__(self, faults: Faults | None = None, *, crash_hook: CrashHook = _no_crash) -> None:
        self.faults = faults or Faults()
        self.crash_hook = crash_hook

    async def solve(
        self,
        *,
        gradient_hash: bytes,
        miner: str,
        round_id: int,
        difficulty: int,
        progress: ProgressCallback,
    ) -> int:
        self.crash_hook("pow", "before")
        self.faults.hit("pow", round_id=round_id)
        progress(1.0, {"hash_rate": 1000.0})
        nonce = int.from_bytes(hashlib.sha256(gradient_hash + miner.encode()).digest()[:6], "big")
        self.crash_hook("pow", "after")
        return nonce


class FakeStore:
    """IPFS in memory: CIDs are content hashes, pins a set."""

    def __init__(self, faults: Faults | None = None) -> None:
        self.faults = faults or Faults()
        self.blobs: dict[str, bytes] = {}
        self.pins: set[str] = set()

    async def add_and_pin(self, data: bytes) -> str:
        self.faults.hit("add_and_pin", size=len(data))
        cid = cid_for(data)
        self.blobs[cid] = data
        self.pins.add(cid)
        return cid

    def cid_of(self, data: bytes) -> str:
        return cid_for(data)

    async def is_pinned(self, cid: str) -> bool:
        self.faults.hit("is_pinned", cid=cid)
        return cid in self.pins

    async def unpin(self, cid: str) -> None:
        self.faults.hit("unpin", cid=cid)
        self.pins.discard(cid)

    async def cat(self, cid: str) -> bytes:
        self.faults.hit("cat", cid=cid)
        return self.blobs[cid]


def _raw_for(round_id: int, cid: str, gradient_hash: bytes, pow_nonce: int, nonce: int) -> bytes:
    body = {"round": round_id, "cid": cid, "hash": gradient_hash.hex(), "pow": pow_nonce}
    return json.dumps({**body, "nonce": nonce}, sort_keys=True).encode()


class FakeChain:
    """A chain in memory: broadcast mines at once; one submission per (round, miner)."""

    def __init__(
        self, faults: Faults | None = None, *, rounds: list[RoundSpec] | None = None
    ) -> None:
        self.faults = faults or Faults()
        self.rounds = list(rounds or [])
        self.account_nonce = 0
        self.signed: list[SignedSubmission] = []
        self.broadcasts: list[str] = []
        self.receipts: dict[str, Receipt] = {}
        self.reverts: dict[str, AlreadySubmittedError] = {}
        self.submissions: dict[int, OnChainSubmission] = {}
        self.block = 100
        self.submission_blocks: dict[int, int] = {}
        self.verdicts: dict[int, tuple[int, int, str]] = {}  # round -> (verdict, reason, by)
        self.rewards: dict[int, int] = {}  # round -> reward (default 100, as the contract's)
        self.versions: dict[int, Any] = {}  # version id -> VersionInfo (publish_version)

    @property
    def miner_address(self) -> str:
        return MINER

    async def open_rounds(self) -> list[RoundSpec]:
        self.faults.hit("open_rounds")
        return [r for r in self.rounds if r.round_id not in self.submissions]

    async def sign_submission(
        self, *, round_id: int, cid: str, gradient_hash: bytes, pow_nonce: int
    ) -> SignedSubmission:
        self.faults.hit("sign_submission", round_id=round_id)
        raw = _raw_for(round_id, cid, gradient_hash, pow_nonce, self.account_nonce)
        signed = SignedSubmission(
            raw=raw,
            tx_hash="0x" + hashlib.sha256(raw).hexdigest(),
            account_nonce=self.account_nonce,
        )
        self.account_nonce += 1
        self.signed.append(signed)
        return signed

    async def broadcast(self, signed: SignedSubmission) -> None:
        self.faults.hit("broadcast", tx_hash=signed.tx_hash)
        self.broadcasts.append(signed.tx_hash)
        if signed.tx_hash in self.receipts:
            return  # already known
        body = json.loads(signed.raw)
        self.block += 1
        existing = self.submissions.get(body["round"])
        if existing is not None:
            self.receipts[signed.tx_hash] = Receipt(signed.tx_hash, False, self.block)
            self.reverts[signed.tx_hash] = AlreadySubmittedError(
                "AlreadySubmitted", stored_cid=existing.cid, service="chain"
            )
            return
        self.submissions[body["round"]] = OnChainSubmission(
            round_id=body["round"],
            miner=MINER,
            cid=body["cid"],
            gradient_hash=bytes.fromhex(body["hash"]),
            pow_nonce=body["pow"],
        )
        self.receipts[signed.tx_hash] = Receipt(signed.tx_hash, True, self.block)
        self.submission_blocks[body["round"]] = self.block

    async def receipt(self, tx_hash: str) -> Receipt | None:
        self.faults.hit("receipt", tx_hash=tx_hash)
        return self.receipts.get(tx_hash)

    # -- the contract views the verdict watcher reads (real return types) ---------------
    def post_verdict(
        self, round_id: int, *, accepted: bool, reason: int = 0, validator: str = VALIDATOR
    ) -> None:
        """A validator's verdict on our submission to `round_id` lands in a new block."""
        self.block += 1
        self.verdicts[round_id] = (1 if accepted else 2, reason, validator)

    async def submission_info(self, round_id: int, miner: str) -> Any:
        from r3mes_desktop.adapters.chain.views import SubmissionInfo

        self.faults.hit("submission_info", round_id=round_id)
        sub = self.submissions.get(round_id)
        if sub is None or miner != sub.miner:
            return None
        verdict, reason, validator = self.verdicts.get(round_id, (0, 0, "0x" + "00" * 20))
        return _real(
            SubmissionInfo,
            round_id=round_id,
            miner=miner,
            cid=sub.cid,
            gradient_hash=sub.gradient_hash,
            pow_nonce=sub.pow_nonce,
            block_number=self.submission_blocks.get(round_id, self.block),
            completed=True,
            openings_cid="",
            verdict=verdict,
            reason=reason,
            validator=validator,
        )

    async def round_info(self, round_id: int) -> Any:
        from r3mes_desktop.adapters.chain.views import RoundInfo

        self.faults.hit("round_info", round_id=round_id)
        return _real(
            RoundInfo,
            round_id=round_id,
            seed=round_id * 7,
            difficulty=16,
            steps=4,
            hyperparams="{}",
            base_model_id="tiny",
            is_open=False,
            deadline=0,
            reward=self.rewards.get(round_id, 100),
        )

    # -- the network model's versions (the model watcher's reads) ------------------------
    def publish_version(
        self, round_id: int, *, eval_loss: float, updates: int = 2, content: bytes = b""
    ) -> int:
        """An aggregator publishes the next version from `round_id` (in a new block)."""
        from r3mes_desktop.adapters.chain.views import VersionInfo

        self.block += 1
        version = len(self.versions) + 1
        data = content or f"adapter {version} of round {round_id}".encode()
        self.versions[version] = _real(
            VersionInfo,
            version_id=version,
            cid=cid_for(data),
            content_hash=hashlib.sha256(data).digest(),
            eval_loss=eval_loss,
            parent_id=version - 1,
            round_id=round_id,
            updates=updates,
            block_number=self.block,
            aggregator=AGGREGATOR,
        )
        return version

    async def current_version(self) -> int:
        self.faults.hit("current_version")
        return len(self.versions)

    async def version_info(self, version_id: int) -> Any:
        self.faults.hit("version_info", version_id=version_id)
        return self.versions.get(version_id)

    async def latest_block(self) -> dict[str, Any]:
        self.faults.hit("latest_block")
        return {"number": self.block, "hash": "0x" + "11" * 32, "timestamp": 0}

    async def wait_receipt(self, tx_hash: str, *, timeout_s: float) -> Receipt:
        self.faults.hit("wait_receipt", tx_hash=tx_hash)
        if tx_hash in self.reverts:
            raise self.reverts[tx_hash]
        receipt = self.receipts.get(tx_hash)
        if receipt is None:
            raise ValidationError(f"unknown transaction {tx_hash}")
        return receipt

    async def submission_of(self, round_id: int) -> OnChainSubmission | None:
        self.faults.hit("submission_of", round_id=round_id)
        return self.submissions.get(round_id)


def _real(cls: Any, **values: Any) -> Any:
    """An instance of the chain client's own record type; a field added to it later (and
    not named here) reads 0, so the fake keeps returning the real type."""
    return cls(**{f.name: values.get(f.name, 0) for f in dataclasses.fields(cls)})


class FakeTaskApi:
    def __init__(self, faults: Faults | None = None) -> None:
        self.faults = faults or Faults()
        self.completed: list[int] = []

    async def complete_task(self, *, round_id: int) -> None:
        self.faults.hit("complete_task", round_id=round_id)
        self.completed.append(round_id)


def make_spec(round_id: int, *, steps: int = 4) -> RoundSpec:
    return RoundSpec(
        round_id=round_id, seed=round_id * 7, difficulty=16, base_model_id="tiny", steps=steps
    )


# -- file-backed world for the crash test ---------------------------------------------------


class World:
    """The "outside world" (IPFS pins, chain, task API) in one sqlite file."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(str(path), isolation_level=None)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = FULL")
        for ddl in (
            "CREATE TABLE IF NOT EXISTS pins (cid TEXT PRIMARY KEY, data BLOB, pinned INTEGER)",
            "CREATE TABLE IF NOT EXISTS signed (tx_hash TEXT PRIMARY KEY, round_id INTEGER, "
            "raw BLOB)",
            "CREATE TABLE IF NOT EXISTS mined (tx_hash TEXT PRIMARY KEY, round_id INTEGER, "
            "success INTEGER, block INTEGER)",
            "CREATE TABLE IF NOT EXISTS submissions (round_id INTEGER PRIMARY KEY, cid TEXT, "
            "hash TEXT, pow TEXT, tx_hash TEXT)",
            "CREATE TABLE IF NOT EXISTS completions (round_id INTEGER, ts REAL)",
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER)",
        ):
            self.conn.execute(ddl)

    def one(self, sql: str, *params: Any) -> Any:
        row = self.conn.execute(sql, params).fetchone()
        return None if row is None else row[0]

    def close(self) -> None:
        self.conn.close()


class FileStore:
    def __init__(self, world: World, *, crash_hook: CrashHook = _no_crash) -> None:
        self.w = world
        self.crash_hook = crash_hook

    async def add_and_pin(self, data: bytes) -> str:
        self.crash_hook("add_and_pin", "before")
        cid = cid_for(data)
        self.w.conn.execute("INSERT OR REPLACE INTO pins VALUES (?, ?, 1)", (cid, data))
        self.crash_hook("add_and_pin", "after")
        return cid

    def cid_of(self, data: bytes) -> str:
        return cid_for(data)

    async def is_pinned(self, cid: str) -> bool:
        self.crash_hook("is_pinned", "before")
        return bool(self.w.one("SELECT pinned FROM pins WHERE cid = ?", cid))

    async def unpin(self, cid: str) -> None:
        self.crash_hook("unpin", "before")
        self.w.conn.execute("UPDATE pins SET pinned = 0 WHERE cid = ?", (cid,))
        self.crash_hook("unpin", "after")

    async def cat(self, cid: str) -> bytes:
        data = self.w.one("SELECT data FROM pins WHERE cid = ?", cid)
        if data is None:
            raise ValidationError(f"unknown CID {cid}")
        return bytes(data)


class FileChain:
    def __init__(self, world: World, *, crash_hook: CrashHook = _no_crash) -> None:
        self.w = world
        self.crash_hook = crash_hook

    @property
    def miner_address(self) -> str:
        return MINER

    async def open_rounds(self) -> list[RoundSpec]:
        return []

    async def sign_submission(
        self, *, round_id: int, cid: str, gradient_hash: bytes, pow_nonce: int
    ) -> SignedSubmission:
        self.crash_hook("sign_submission", "before")
        nonce = int(self.w.one("SELECT value FROM meta WHERE key = 'nonce'") or 0)
        self.w.conn.execute("INSERT OR REPLACE INTO meta VALUES ('nonce', ?)", (nonce + 1,))
        raw = _raw_for(round_id, cid, gradient_hash, pow_nonce, nonce)
        tx_hash = "0x" + hashlib.sha256(raw).hexdigest()
        self.w.conn.execute("INSERT INTO signed VALUES (?, ?, ?)", (tx_hash, round_id, raw))
        self.crash_hook("sign_submission", "after")
        return SignedSubmission(raw=raw, tx_hash=tx_hash, account_nonce=nonce)

    async def broadcast(self, signed: SignedSubmission) -> None:
        self.crash_hook("broadcast", "before")
        if self.w.one("SELECT 1 FROM mined WHERE tx_hash = ?", signed.tx_hash):
            return
        body = json.loads(signed.raw)
        block = int(self.w.one("SELECT COUNT(*) FROM mined")) + 1
        self.w.conn.execute("BEGIN IMMEDIATE")
        taken = self.w.one("SELECT 1 FROM submissions WHERE round_id = ?", body["round"])
        self.w.conn.execute(
            "INSERT INTO mined VALUES (?, ?, ?, ?)",
            (signed.tx_hash, body["round"], 0 if taken else 1, block),
        )
        if not taken:
            self.w.conn.execute(
                "INSERT INTO submissions VALUES (?, ?, ?, ?, ?)",
                (body["round"], body["cid"], body["hash"], str(body["pow"]), signed.tx_hash),
            )
        self.w.conn.execute("COMMIT")
        self.crash_hook("broadcast", "after")

    async def receipt(self, tx_hash: str) -> Receipt | None:
        self.crash_hook("receipt", "before")
        row = self.w.conn.execute(
            "SELECT success, block FROM mined WHERE tx_hash = ?", (tx_hash,)
        ).fetchone()
        return None if row is None else Receipt(tx_hash, bool(row[0]), int(row[1]))

    async def wait_receipt(self, tx_hash: str, *, timeout_s: float) -> Receipt:
        receipt = await self.receipt(tx_hash)
        if receipt is None:
            raise ValidationError(f"transaction {tx_hash} was never broadcast")
        if not receipt.success:
            round_id = self.w.one("SELECT round_id FROM mined WHERE tx_hash = ?", tx_hash)
            stored = self.w.one("SELECT cid FROM submissions WHERE round_id = ?", round_id)
            raise AlreadySubmittedError("AlreadySubmitted", stored_cid=stored, service="chain")
        return receipt

    async def submission_of(self, round_id: int) -> OnChainSubmission | None:
        self.crash_hook("submission_of", "before")
        row = self.w.conn.execute(
            "SELECT cid, hash, pow FROM submissions WHERE round_id = ?", (round_id,)
        ).fetchone()
        if row is None:
            return None
        return OnChainSubmission(round_id, MINER, row[0], bytes.fromhex(row[1]), int(row[2]))


class FileTaskApi:
    def __init__(self, world: World, *, crash_hook: CrashHook = _no_crash) -> None:
        self.w = world
        self.crash_hook = crash_hook

    async def complete_task(self, *, round_id: int) -> None:
        self.crash_hook("complete_task", "before")
        self.w.conn.execute("INSERT INTO completions VALUES (?, 0)", (round_id,))
        self.crash_hook("complete_task", "after")


@dataclass(frozen=True)
class FakeSettings:
    """The coordinator's settings without pydantic (fast to import in the crash worker)."""

    transaction_timeout: float = 300.0
    max_active_transactions: int = 10
    max_gradient_size_mb: int = 100
    stale_threshold: float = 600.0
    call_timeout: float = 30.0
    verdict_overdue_blocks: int = 50
    max_retries: int = 3
    retry_initial_delay: float = 1.0
    retry_max_delay: float = 60.0
    retry_backoff_factor: float = 2.0
    extra: Mapping[str, Any] = field(default_factory=dict)


E = TypeVar("E", bound=Event)


def recorded(bus: EventBus, kind: type[E]) -> list[E]:
    """Every event of `kind` the bus publishes from now on, in order."""
    seen: list[E] = []

    def on(event: Event) -> None:
        if isinstance(event, kind):
            seen.append(event)

    bus.subscribe(on)
    return seen
