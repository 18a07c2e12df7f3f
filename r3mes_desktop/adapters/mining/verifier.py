"""Verification in a worker process: the validator's event loop never runs torch.

One spawned process (torch imported once, then reused) runs `trace.verify_job`; a crash of
the process is a resource error for that submission, and the next call starts a fresh one.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from r3mes_desktop.core.errors import ResourceError


def _run(job: dict[str, Any]) -> dict[str, Any]:
    from r3mes_desktop.adapters.mining import trace  # torch: worker only

    return trace.verify_job(job)


def _aggregate(job: dict[str, Any]) -> dict[str, Any]:
    from r3mes_desktop.adapters.mining import learning  # torch: worker only

    return learning.aggregate_job(job)


class ProcessVerifier:
    """Verification (validators) and aggregation (aggregators), one spawned worker."""

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None

    async def verify(self, job: dict[str, Any]) -> dict[str, Any]:
        return await self._run(_run, job)

    async def aggregate(self, job: dict[str, Any]) -> dict[str, Any]:
        return await self._run(_aggregate, job)

    async def _run(
        self, target: Callable[[dict[str, Any]], dict[str, Any]], job: dict[str, Any]
    ) -> dict[str, Any]:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn"))
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, target, job)
        except BrokenProcessPool:
            self._pool = None
            raise ResourceError("the worker process died; it is restarted") from None

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, True, cancel_futures=True)
