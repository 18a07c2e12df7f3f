"""Injectable time: policies take a Clock so tests record delays instead of sleeping."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (durations, breaker timeouts)."""
        ...

    def time(self) -> float:
        """Wall-clock seconds since the epoch (journal timestamps, ages)."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class ManualClock:
    """A clock that only moves when told to; `sleep` advances it and records the delay.

    `sleep` yields to the loop once so concurrent tasks interleave as they would for real.
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._mono = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self._mono

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._mono += seconds
        self._now += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(seconds)
        await asyncio.sleep(0)


SYSTEM_CLOCK = SystemClock()
