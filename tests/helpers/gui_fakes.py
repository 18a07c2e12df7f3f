"""Small in-memory stand-ins for the coordinator and miner, for widget-level GUI tests.

They implement the same async API the window calls and publish the same core events on a
real `EventBus`; the breakers are the real `BreakerRegistry`. The end-to-end GUI tests use
the real runtime instead (tests/gui/test_window_devnet.py).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from r3mes_desktop.core.breaker import BreakerRegistry
from r3mes_desktop.core.events import (
    EventBus,
    MinerStateChanged,
    RetryScheduled,
    StepProgress,
    TransactionStateChanged,
)

FLOW = ("PENDING", "TRAINING", "IPFS_UPLOAD", "BLOCKCHAIN_SUBMIT", "TASK_COMPLETE", "COMMITTED")


class FakeCoordinator:
    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self.txs: dict[str, dict[str, Any]] = {}
        self.letters: list[dict[str, Any]] = []
        self.checkpoints: list[dict[str, Any]] = []
        self.calls: list[tuple[str, Any]] = []

    # -- driving (tests) ---------------------------------------------------------------
    def new_tx(self, round_id: int = 1, *, age_s: float = 0.0) -> str:
        tx_id = uuid.uuid4().hex
        self.txs[tx_id] = {
            "transaction_id": tx_id,
            "round_id": round_id,
            "state": "PENDING",
            "created_at": time.time() - age_s,
            "attempts": 0,
            "failed_step": None,
            "error_category": None,
            "error_message": None,
            "progress": {},
            "history": [],
        }
        return tx_id

    def move(self, tx_id: str, new_state: str, **error: Any) -> None:
        tx = self.txs[tx_id]
        old = tx["state"]
        tx["state"] = new_state
        tx.update({k: v for k, v in error.items() if v is not None})
        tx["history"].append({"ts": time.time(), "kind": "state", "state": new_state})
        self.bus.publish(
            TransactionStateChanged(
                transaction_id=tx_id,
                round_id=tx["round_id"],
                old_state=old,
                new_state=new_state,
                failed_step=error.get("failed_step"),
                error_category=error.get("error_category"),
                error_message=error.get("error_message"),
            )
        )

    def progress(self, tx_id: str, step: str, fraction: float, **detail: Any) -> None:
        self.txs[tx_id]["progress"][step] = fraction
        self.bus.publish(
            StepProgress(transaction_id=tx_id, step=step, fraction=fraction, detail=detail)
        )

    def retry(self, tx_id: str, *, service: str, delay: float, message: str) -> None:
        self.txs[tx_id]["attempts"] += 1
        self.bus.publish(
            RetryScheduled(
                operation=f"{service}.call",
                service=service,
                attempt=self.txs[tx_id]["attempts"],
                delay=delay,
                category="network",
                message=message,
                transaction_id=tx_id,
            )
        )

    def commit(self, round_id: int = 1) -> str:
        tx_id = self.new_tx(round_id)
        for state in FLOW[1:]:
            self.move(tx_id, state)
        return tx_id

    def roll_back_on_ipfs(self, round_id: int = 1) -> str:
        tx_id = self.new_tx(round_id)
        self.move(tx_id, "TRAINING")
        self.move(tx_id, "IPFS_UPLOAD")
        self.move(
            tx_id,
            "ROLLED_BACK",
            failed_step="IPFS_UPLOAD",
            error_category="network",
            error_message="ClientConnectorError: connection refused",
        )
        return tx_id

    # -- the coordinator API the window calls ------------------------------------------
    async def list_transactions(self) -> list[dict[str, Any]]:
        return [dict(tx) for tx in self.txs.values()]

    async def status(self, tx_id: str) -> dict[str, Any] | None:
        tx = self.txs.get(tx_id)
        return None if tx is None else {**tx, "age_seconds": time.time() - tx["created_at"]}

    async def statistics(self, *, window_s: float = 3600) -> dict[str, Any]:
        states = [tx["state"] for tx in self.txs.values()]
        total = len(states)
        breakdown: dict[str, int] = {}
        for tx in self.txs.values():
            if tx["error_category"]:
                key = f"{tx['error_category']}_errors"
                breakdown[key] = breakdown.get(key, 0) + 1
        return {
            "total_transactions": total,
            "committed_transactions": states.count("COMMITTED"),
            "failed_transactions": states.count("FAILED"),
            "rolled_back_transactions": states.count("ROLLED_BACK"),
            "transactions_per_minute": float(states.count("COMMITTED")),
            "error_breakdown": breakdown,
        }

    async def cleanup_stale(self) -> dict[str, Any]:
        self.calls.append(("cleanup_stale", None))
        stale = [
            tx_id
            for tx_id, tx in self.txs.items()
            if tx["state"] not in ("COMMITTED", "ROLLED_BACK", "FAILED")
            and time.time() - tx["created_at"] > 300
        ]
        for tx_id in stale:
            self.move(tx_id, "ROLLED_BACK", failed_step="TIMEOUT", error_message="stale")
        return {"count": len(stale), "actions": {"ROLLED_BACK": len(stale)} if stale else {}}

    async def dead_letters(self) -> list[dict[str, Any]]:
        return list(self.letters)

    async def retry_dead_letter(self, letter_id: str) -> None:
        self.calls.append(("retry_dead_letter", letter_id))
        self.letters = [x for x in self.letters if x["id"] != letter_id]

    async def discard_dead_letter(self, letter_id: str) -> None:
        self.calls.append(("discard_dead_letter", letter_id))
        self.letters = [x for x in self.letters if x["id"] != letter_id]

    async def resumable(self) -> list[dict[str, Any]]:
        return list(self.checkpoints)

    async def resume(self, item: Any) -> None:
        self.calls.append(("resume", item))
        self.checkpoints.remove(item)


class FakeMiner:
    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self.state = "idle"

    def _go(self, new: str) -> None:
        old, self.state = self.state, new
        self.bus.publish(MinerStateChanged(old_state=old, new_state=new))

    async def start(self) -> None:
        self._go("mining")

    async def pause(self) -> None:
        self._go("paused")

    async def finish_then_stop(self) -> None:
        self._go("stopping")

    async def stop(self) -> None:
        self._go("idle")


class FakeRuntime:
    """The attributes `MainWindow` reads from the real `Runtime`."""

    def __init__(self, data_dir: Path) -> None:
        self.bus = EventBus()
        self.coordinator = FakeCoordinator(self.bus)
        self.miner = FakeMiner(self.bus)
        self.breakers = BreakerRegistry(bus=self.bus)
        self.settings: Any = None
        self.data_dir = data_dir
        self.chain_down = False

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
