"""`Bulkhead`: how many transactions run at once (R3MES_MAX_ACTIVE_TRANSACTIONS)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator


class Bulkhead:
    """Limits concurrent work (R3MES_MAX_ACTIVE_TRANSACTIONS); FIFO; limit changeable live.

    Lowering the limit never interrupts running work: new entries wait until enough leave.
    """

    def __init__(self, limit: int, *, name: str = "bulkhead") -> None:
        self.name = name
        self._limit = self._check(limit)
        self._in_use = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @staticmethod
    def _check(limit: int) -> int:
        if limit < 1:
            raise ValueError(f"bulkhead limit = {limit}: accepted >= 1")
        return limit

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def in_use(self) -> int:
        return self._in_use

    @property
    def waiting(self) -> int:
        return sum(1 for fut in self._waiters if not fut.done())

    @property
    def full(self) -> bool:
        return self._in_use >= self._limit

    def set_limit(self, limit: int) -> None:
        self._limit = self._check(limit)
        self._grant()

    def try_acquire(self) -> bool:
        """Take a slot if one is free now and nobody is queued; never waits."""
        if self._in_use < self._limit and not self.waiting:
            self._in_use += 1
            return True
        return False

    async def acquire(self) -> None:
        if self.try_acquire():
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # granted just as we were cancelled: hand it on
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(fut)
            raise

    def release(self) -> None:
        if self._in_use <= 0:
            raise RuntimeError(f"{self.name}: release without acquire")
        self._in_use -= 1
        self._grant()

    def _grant(self) -> None:
        while self._waiters and self._in_use < self._limit:
            fut = self._waiters.popleft()
            if not fut.done():
                self._in_use += 1
                fut.set_result(None)

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        await self.acquire()
        try:
            yield
        finally:
            self.release()

    def snapshot(self) -> dict[str, int]:
        return {"limit": self._limit, "in_use": self._in_use, "waiting": self.waiting}
