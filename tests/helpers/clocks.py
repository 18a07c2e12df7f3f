"""A clock whose sleeps block until the test moves time: for races between waits.

`core.clock.ManualClock` returns from every sleep at once (and records it), which is what
delay-sequence tests want. Timeouts, "retry now" and other races need sleeps that stay
pending until the test says time has passed: that is `SteppedClock`.
"""

from __future__ import annotations

import asyncio


async def settle(rounds: int = 20) -> None:
    """Let every ready task run until the loop has nothing left to do right now."""
    for _ in range(rounds):
        await asyncio.sleep(0)


class SteppedClock:
    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._mono = 0.0
        self.sleeps: list[float] = []
        self._waiters: list[tuple[float, asyncio.Future[None]]] = []

    def monotonic(self) -> float:
        return self._mono

    def time(self) -> float:
        return self._now

    @property
    def pending(self) -> int:
        """Sleeps not yet over."""
        return sum(1 for _, fut in self._waiters if not fut.done())

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((self._mono + seconds, fut))
        await fut

    async def advance(self, seconds: float) -> None:
        """Move time forward, wake the sleeps that are due, and let them run."""
        self._mono += seconds
        self._now += seconds
        due = [(t, f) for t, f in self._waiters if t <= self._mono + 1e-9]
        self._waiters = [(t, f) for t, f in self._waiters if t > self._mono + 1e-9]
        for _, fut in due:
            if not fut.done():
                fut.set_result(None)
        await settle()
