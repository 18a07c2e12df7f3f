"""The loop of a background watcher that reads the chain: poll, and while the chain is down
wait longer each time (doubling up to a cap), saying so once per outage; while a backlog is
due, poll again soon. The verdict watcher and the model-version watcher share it."""

from __future__ import annotations

import logging
from typing import Any, Protocol

from r3mes_desktop.core.clock import Clock

log = logging.getLogger(__name__)


class _Report(Protocol):
    @property
    def more_due(self) -> bool: ...


class BackoffPoller:
    """Subclasses set `clock`, `poll_s`, `busy_poll_s`, `max_delay_s`, `_failures = 0` and
    `what` (for the log line), and implement `poll()`."""

    clock: Clock
    poll_s: float
    busy_poll_s: float
    max_delay_s: float
    _failures: int
    what: str

    async def poll(self) -> Any:
        raise NotImplementedError

    async def run(self) -> None:
        """Poll forever (the coordinator's background task), longer apart while the chain
        is down."""
        while True:
            await self.clock.sleep(await self.poll_once())

    async def poll_once(self) -> float:
        """One poll; returns how long to wait before the next."""
        try:
            report: _Report = await self.poll()
        except Exception as exc:
            self._failures += 1
            delay = min(self.max_delay_s, self.poll_s * 2.0**self._failures)
            level = logging.WARNING if self._failures == 1 else logging.DEBUG  # once an outage
            log.log(level, "reading %s failed (%s); next try in %.0f s", self.what, exc, delay)
            return delay
        self._failures = 0
        return self.busy_poll_s if report.more_due else self.poll_s
