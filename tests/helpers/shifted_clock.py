"""A real clock whose wall time a test can move forward ("ten minutes later").

Sleeps and monotonic time stay real, so workers, timeouts and the Qt loop behave as in
production; only `time()` (journal timestamps, ages, stale thresholds) jumps.
"""

from __future__ import annotations

import asyncio
import time


class ShiftedClock:
    def __init__(self) -> None:
        self.offset = 0.0

    def advance_wall(self, seconds: float) -> None:
        self.offset += seconds

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time() + self.offset

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
