"""Read-only answers from the journal, without starting a coordinator.

`status`, `stats`, `transactions` and `dead-letters` must work while a miner is running in
another process (sqlite WAL allows concurrent readers) and must never resume or drive a
transaction, so they read through this view instead of `Coordinator.start()`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from r3mes_desktop.core.analytics import AnalyticsConfig, analyse
from r3mes_desktop.core.errors import ValidationError
from r3mes_desktop.core.journal import Journal
from r3mes_desktop.core.records import DeadLetter, TransactionRecord, TransactionStatus
from r3mes_desktop.core.stats import compute_statistics
from r3mes_desktop.core.txstate import TxState


class JournalView:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.journal = Journal(path)

    async def __aenter__(self) -> JournalView:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        await self.journal.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.journal.close()

    async def statistics(self, *, window_s: float = 3600) -> dict[str, Any]:
        now = time.time()
        return await self.journal.run(
            lambda conn: compute_statistics(conn, now=now, window_s=window_s)
        )

    async def error_analysis(self) -> dict[str, Any]:
        now = time.time()
        config = AnalyticsConfig()
        return await self.journal.run(lambda conn: analyse(conn, now=now, config=config))

    async def record(self, transaction_id: str) -> TransactionRecord | None:
        return await self.journal.get(transaction_id)

    async def status(self, transaction_id: str) -> TransactionStatus | None:
        rec = await self.journal.get(transaction_id)
        if rec is None:
            return None
        history = await self.journal.history(transaction_id)
        (status,) = await self.journal.statuses([rec], now=time.time(), history=history)
        return status

    async def list_transactions(
        self, *, states: Iterable[str] | None = None, limit: int = 50
    ) -> list[TransactionStatus]:
        if not 1 <= limit <= 100_000:
            raise ValidationError(f"limit = {limit}: accepted 1..100000")
        try:
            wanted = None if states is None else [TxState(s) for s in states]
        except ValueError:
            accepted = ", ".join(s.value for s in TxState)
            raise ValidationError(f"state: accepted {accepted}") from None
        records = await self.journal.list_transactions(states=wanted, limit=limit)
        return await self.journal.statuses(records, now=time.time())

    async def dead_letters(self, *, status: str | None = "open") -> list[DeadLetter]:
        return await self.journal.dead_letters(status=status)

    async def integrity_problems(self) -> list[str]:
        return await self.journal.integrity_check()
