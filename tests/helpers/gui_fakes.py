"""Small in-memory stand-ins for the coordinator and miner, for widget-level GUI tests.

They implement the async API the window calls (`gui.ports`), return the core's own records
(`TransactionStatus`, `DeadLetter`, `CleanupReport`, lower-case `TxState` values, a
`MinerState`) and publish the same core events on a real `EventBus`; the breakers are the
real `BreakerRegistry`. The end-to-end GUI tests use
the real runtime instead (tests/unit/gui/test_window_devnet.py).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from r3mes_desktop.adapters.governor.devices import Detected
from r3mes_desktop.core.devices import DeviceInfo
from r3mes_desktop.core.events import (
    EventBus,
    MinerStateChanged,
    ModelVersionPublished,
    RetryScheduled,
    StepProgress,
    TransactionStateChanged,
    VerdictRecorded,
)
from r3mes_desktop.core.miner import MinerState
from r3mes_desktop.core.records import (
    CleanupReport,
    DeadLetter,
    ModelVersion,
    TransactionStatus,
)
from r3mes_desktop.core.resilience.breaker import BreakerRegistry
from r3mes_desktop.core.txstate import STEPS, TERMINAL, TxState, step_done

if TYPE_CHECKING:
    from r3mes_desktop.adapters.chain.keystore import Keystore
    from r3mes_desktop.adapters.faults import FaultInjector
    from r3mes_desktop.support.config.settings import Settings

VALIDATOR = "0x" + "cd" * 20

FLOW = (
    TxState.PENDING,
    TxState.TRAINING,
    TxState.IPFS_UPLOAD,
    TxState.BLOCKCHAIN_SUBMIT,
    TxState.TASK_COMPLETE,
    TxState.COMMITTED,
)


@dataclass
class FakeTx:
    """What the fake journal keeps of a transaction; `status()` turns it into the core's
    `TransactionStatus`, as `Coordinator.status` does from the real journal."""

    transaction_id: str
    round_id: int
    created_at: float
    state: TxState = TxState.PENDING
    attempts: int = 0
    failed_step: str | None = None
    error_category: str | None = None
    error_message: str | None = None
    finished_at: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    verdict: str | None = None  # "accepted" | "rejected" once a validator said so
    verdict_reason_text: str | None = None
    credits: int | None = None
    verdict_at: float | None = None
    aggregated_into: int | None = None  # the model version its accepted update went into

    def status(self, now: float) -> TransactionStatus:
        end = self.finished_at if self.finished_at is not None else now
        return TransactionStatus(
            transaction_id=self.transaction_id,
            state=self.state.value,
            age_seconds=round(max(0.0, end - self.created_at), 3),
            failed_step=self.failed_step,
            error_message=self.error_message,
            progress={s.value: step_done(s, self.state, self.failed_step) for s in STEPS},
            round_id=self.round_id,
            attempts=self.attempts,
            next_retry_at=None,
            error_category=self.error_category,
            history=list(self.history),
            verdict=self.verdict or ("awaiting" if self.state is TxState.COMMITTED else None),
            verdict_reason_text=self.verdict_reason_text,
            credits=self.credits,
            verdict_validator=VALIDATOR if self.verdict else None,
            verdict_at=self.verdict_at,
            model_version=0,
            aggregation=None if self.aggregated_into is None else "aggregated",
            aggregated_into=self.aggregated_into,
            aggregation_text=(
                None
                if self.aggregated_into is None
                else f"went into version {self.aggregated_into}"
            ),
        )


def dead_letter(letter_id: str, *, round_id: int = 1, reason: str = "rejected") -> DeadLetter:
    """An open dead letter as the journal returns it."""
    return DeadLetter(
        id=letter_id,
        transaction_id=f"mining_tx_{letter_id}",
        round_id=round_id,
        created_at=time.time(),
        reason=reason,
        category="permanent",
        payload={},
        status="open",
        resolved_at=None,
    )


class FakeCoordinator:
    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self.txs: dict[str, FakeTx] = {}
        self.letters: list[DeadLetter] = []
        self.checkpoints: list[dict[str, Any]] = []
        self.calls: list[tuple[str, Any]] = []
        self.versions: list[ModelVersion] = []

    # -- driving (tests) ---------------------------------------------------------------
    def new_tx(self, round_id: int = 1, *, age_s: float = 0.0) -> str:
        tx_id = "mining_tx_" + uuid.uuid4().hex
        self.txs[tx_id] = FakeTx(tx_id, round_id, created_at=time.time() - age_s)
        return tx_id

    def move(
        self,
        tx_id: str,
        new_state: TxState,
        *,
        failed_step: str | None = None,
        error_category: str | None = None,
        error_message: str | None = None,
    ) -> None:
        tx = self.txs[tx_id]
        old = tx.state
        tx.state = new_state
        tx.failed_step = failed_step or tx.failed_step
        tx.error_category = error_category or tx.error_category
        tx.error_message = error_message or tx.error_message
        now = time.time()
        if new_state in TERMINAL:
            tx.finished_at = now
        tx.history.append(
            {
                "transaction_id": tx_id,
                "ts": now,
                "kind": "transition",
                "old_state": old.value,
                "new_state": new_state.value,
            }
        )
        self.bus.publish(
            TransactionStateChanged(
                transaction_id=tx_id,
                round_id=tx.round_id,
                old_state=old.value,
                new_state=new_state.value,
                failed_step=failed_step,
                error_category=error_category,
                error_message=error_message,
            )
        )

    def progress(self, tx_id: str, step: str, fraction: float, **detail: Any) -> None:
        self.bus.publish(
            StepProgress(transaction_id=tx_id, step=step, fraction=fraction, detail=detail)
        )

    def retry(self, tx_id: str, *, service: str, delay: float, message: str) -> None:
        tx = self.txs[tx_id]
        tx.attempts += 1
        self.bus.publish(
            RetryScheduled(
                operation=f"{service}.call",
                service=service,
                attempt=tx.attempts,
                delay=delay,
                category="network",
                message=message,
                transaction_id=tx_id,
            )
        )

    def post_verdict(
        self,
        tx_id: str,
        *,
        accepted: bool,
        credits: int = 100,
        reason_text: str = "a sampled training segment did not reproduce",
    ) -> None:
        """What the coordinator's verdict watcher does: journal, then publish."""
        tx = self.txs[tx_id]
        tx.verdict = "accepted" if accepted else "rejected"
        tx.credits = credits if accepted else 0
        tx.verdict_reason_text = "accepted" if accepted else reason_text
        tx.verdict_at = time.time()
        self.bus.publish(
            VerdictRecorded(
                transaction_id=tx_id,
                round_id=tx.round_id,
                verdict=tx.verdict,
                reason=0 if accepted else 5,
                reason_text=tx.verdict_reason_text,
                credits=tx.credits,
                block_number=120,
                validator=VALIDATOR,
                ts=tx.verdict_at,
            )
        )

    def publish_version(self, round_id: int, *, eval_loss: float, announce: bool = True) -> int:
        """What the coordinator's model watcher does: journal, then publish (unless
        `announce` is False: a version journaled before the window listened)."""
        version = len(self.versions) + 1
        self.versions.append(
            ModelVersion(
                version_id=version,
                round_id=round_id,
                parent_id=version - 1,
                eval_loss=eval_loss,
                updates=1,
                cid=f"bafkversion{version}",
                content_hash=f"{version:064x}",
                block_number=200 + version,
                aggregator="0x" + "ef" * 20,
                seen_at=time.time(),
            )
        )
        for tx in self.txs.values():
            if tx.round_id == round_id and tx.verdict == "accepted":
                tx.aggregated_into = version
        if announce:
            self.bus.publish(
                ModelVersionPublished(
                    version_id=version,
                    round_id=round_id,
                    parent_id=version - 1,
                    eval_loss=eval_loss,
                    updates=1,
                    block_number=200 + version,
                    aggregator="0x" + "ef" * 20,
                    current_version=version,
                )
            )
        return version

    def commit(self, round_id: int = 1) -> str:
        tx_id = self.new_tx(round_id)
        for state in FLOW[1:]:
            self.move(tx_id, state)
        return tx_id

    def roll_back_on_ipfs(self, round_id: int = 1) -> str:
        tx_id = self.new_tx(round_id)
        self.move(tx_id, TxState.TRAINING)
        self.move(tx_id, TxState.IPFS_UPLOAD)
        self.move(
            tx_id,
            TxState.ROLLED_BACK,
            failed_step=TxState.IPFS_UPLOAD.value,
            error_category="network",
            error_message="ClientConnectorError: connection refused",
        )
        return tx_id

    # -- the coordinator API the window calls ------------------------------------------
    async def list_transactions(self) -> list[TransactionStatus]:
        now = time.time()
        return [tx.status(now) for tx in self.txs.values()]

    async def status(self, transaction_id: str) -> TransactionStatus:
        tx = self.txs.get(transaction_id)
        if tx is None:
            raise ValueError(f"transaction_id {transaction_id!r} is not in the journal")
        return tx.status(time.time())

    async def statistics(self, *, window_s: float = 3600) -> dict[str, Any]:
        states = [tx.state for tx in self.txs.values()]
        verdicts = [tx.verdict for tx in self.txs.values() if tx.verdict]
        breakdown: dict[str, int] = {}
        for tx in self.txs.values():
            if tx.error_category:
                key = f"{tx.error_category}_errors"
                breakdown[key] = breakdown.get(key, 0) + 1
        return {
            "total_transactions": len(states),
            "committed_transactions": states.count(TxState.COMMITTED),
            "failed_transactions": states.count(TxState.FAILED),
            "rolled_back_transactions": states.count(TxState.ROLLED_BACK),
            "transactions_per_minute": float(states.count(TxState.COMMITTED)),
            "error_breakdown": breakdown,
            "verdicts_accepted": verdicts.count("accepted"),
            "verdicts_rejected": verdicts.count("rejected"),
            "verdicts_pending": states.count(TxState.COMMITTED) - len(verdicts),
            "verdicts_overdue": 0,
            "credits_total": sum(tx.credits or 0 for tx in self.txs.values()),
            "model_version": len(self.versions),
            "model_eval_loss": self.versions[-1].eval_loss if self.versions else None,
            "updates_aggregated": sum(tx.aggregated_into is not None for tx in self.txs.values()),
        }

    async def credits_series(self, *, limit: int = 500) -> list[tuple[float, int]]:
        done = sorted(
            (tx.verdict_at, tx.credits or 0)
            for tx in self.txs.values()
            if tx.verdict_at is not None
        )
        series, total = [], 0
        for at, credits in done:
            total += credits
            series.append((at, total))
        return series[-limit:]

    async def model_versions(self, *, limit: int = 500) -> list[ModelVersion]:
        return self.versions[-limit:]

    async def cleanup_stale(self) -> CleanupReport:
        self.calls.append(("cleanup_stale", None))
        now = time.time()
        stale = [
            tx_id
            for tx_id, tx in self.txs.items()
            if tx.state not in TERMINAL and now - tx.created_at > 300
        ]
        for tx_id in stale:
            self.move(tx_id, TxState.ROLLED_BACK, failed_step="timeout", error_message="stale")
        cleaned = [{"transaction_id": t, "new_state": TxState.ROLLED_BACK.value} for t in stale]
        return CleanupReport(checked_at=now, older_than_s=300.0, cleaned=cleaned)

    async def dead_letters(self) -> list[DeadLetter]:
        return list(self.letters)

    async def retry_dead_letter(self, letter_id: str) -> TransactionStatus:
        self.calls.append(("retry_dead_letter", letter_id))
        letter = self._take_letter(letter_id)
        tx_id = self.new_tx(letter.round_id)
        for state in FLOW[1:]:
            self.move(tx_id, state)
        return self.txs[tx_id].status(time.time())

    async def discard_dead_letter(self, letter_id: str) -> None:
        self.calls.append(("discard_dead_letter", letter_id))
        self._take_letter(letter_id)

    def _take_letter(self, letter_id: str) -> DeadLetter:
        letter = next((x for x in self.letters if x.id == letter_id), None)
        if letter is None:
            raise ValueError(f"dead letter {letter_id} is not open")
        self.letters.remove(letter)
        return letter

    async def resumable(self) -> list[dict[str, Any]]:
        return list(self.checkpoints)

    async def resume(self, transaction_id: str | Mapping[str, Any]) -> TransactionStatus:
        self.calls.append(("resume", transaction_id))
        item = next(c for c in self.checkpoints if c == transaction_id)
        self.checkpoints.remove(item)
        tx_id = self.new_tx(int(item["round_id"]))
        for state in FLOW[1:]:
            self.move(tx_id, state)
        return self.txs[tx_id].status(time.time())


class FakeMiner:
    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self.state = MinerState.IDLE
        self.in_flight: list[int] = []

    def _go(self, new: MinerState) -> None:
        old, self.state = self.state, new
        self.bus.publish(MinerStateChanged(old_state=old.value, new_state=new.value))

    async def start(self) -> None:
        self._go(MinerState.MINING)

    async def pause(self) -> None:
        self._go(MinerState.PAUSED)

    async def finish_then_stop(self) -> None:
        self._go(MinerState.STOPPING)

    async def stop(self) -> None:
        self._go(MinerState.IDLE)


class FakeRuntime:
    """The attributes `MainWindow` reads from the real `Runtime`."""

    def __init__(self, data_dir: Path) -> None:
        self.bus = EventBus()
        self.coordinator = FakeCoordinator(self.bus)
        self.miner = FakeMiner(self.bus)
        self.breakers = BreakerRegistry(bus=self.bus)
        self.settings: Settings | None = None
        self.data_dir = data_dir
        self.ready = True
        self.faults: FaultInjector | None = None
        self.keystore: Keystore | None = None
        self.chain_down = False
        self.applied: list[Settings] = []
        self.not_live: list[str] = []  # what apply_settings says needs a restart
        self.detected = Detected(
            devices=(
                DeviceInfo("cpu", "Test CPU", memory_mb=16384, cores=8),
                DeviceInfo("cuda:0", "NVIDIA H200", memory_mb=143771, driver="580.159.04"),
                DeviceInfo("cuda:1", "NVIDIA H200", memory_mb=143771, driver="580.159.04"),
            ),
            notes=("nvidia-ml-py is not installed: no driver version or temperatures",),
        )
        self.detection_gate: asyncio.Event | None = None  # set: detection waits for it
        self.governor_decision: Any = None

    def endpoints(self) -> dict[str, str | None]:
        return {"chain": "http://127.0.0.1:8545", "ipfs": "http://127.0.0.1:5001"}

    async def chain_info(self) -> dict[str, Any]:
        if self.chain_down:
            raise ConnectionRefusedError("connection refused")
        return {"network": "devnet", "block": 7, "account": "0x" + "ab" * 20, "balance": 9.5}

    async def ipfs_info(self) -> str:
        return "devnet store"

    def device_name(self) -> str:
        return "CPU"

    async def detect_devices(self) -> Detected:
        if self.detection_gate is not None:
            await self.detection_gate.wait()
        return self.detected

    def apply_settings(self, settings: Settings) -> list[str]:
        self.applied.append(settings)
        self.settings = settings
        return list(self.not_live)


class FlakyStore:
    """Wraps the devnet's real content store; `failing = True` makes uploads fail the way a
    stopped IPFS daemon does (connection refused). Unpin and reads keep working, so the
    coordinator's compensation runs for real."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.failing = False
        self.refused = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def add_and_pin(self, data: bytes) -> str:
        if self.failing:
            self.refused += 1
            raise ConnectionRefusedError(111, "connection refused")
        cid: str = await self.inner.add_and_pin(data)
        return cid
