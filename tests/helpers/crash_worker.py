"""The process the crash test kills: runs rounds against the file-backed world.

Usage: python -m tests.helpers.crash_worker DIR ROUNDS [OP:PHASE:K]
It kills itself with SIGKILL at the K-th time it reaches OP/PHASE (an effect in a fake, or
"state:<new_state>" right after a journal commit), so every step gets killed inside, at
points a timer could only hit by luck. Without a kill spec it runs to the end and exits 0.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from r3mes_desktop.core.coordinator import Coordinator
from r3mes_desktop.core.events import Event, EventBus, TransactionStateChanged
from r3mes_desktop.core.journal import Journal
from r3mes_desktop.core.resilience.breaker import BreakerConfig, BreakerRegistry
from tests.helpers.fakes import (
    MINER,
    FakePow,
    FakeSettings,
    FakeTrainer,
    FileChain,
    FileStore,
    FileTaskApi,
    World,
    make_spec,
)


class Killer:
    def __init__(self, spec: str | None) -> None:
        self.target: tuple[str, str] | None = None
        self.remaining = 0
        if spec:
            op, phase, k = spec.split(":")
            self.target, self.remaining = (op, phase), int(k)

    def __call__(self, operation: str, phase: str) -> None:
        if self.target != (operation, phase):
            return
        self.remaining -= 1
        if self.remaining <= 0:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_event(self, event: Event) -> None:
        if isinstance(event, TransactionStateChanged):
            self("state", event.new_state)


async def main(root: Path, rounds: int, kill_spec: str | None) -> None:
    killer = Killer(kill_spec)
    world = World(root / "world.db")
    bus = EventBus()
    bus.subscribe(killer.on_event)
    coordinator = Coordinator(
        # the test alternates where gradients go between starts: rows, then files
        journal=Journal(
            root / "journal.db",
            inline_gradient_max=int(os.environ.get("CRASH_INLINE_GRADIENT_MAX", "262144")),
        ),
        trainer=FakeTrainer(crash_hook=killer),
        pow=FakePow(crash_hook=killer),
        store=FileStore(world, crash_hook=killer),
        chain=FileChain(world, crash_hook=killer),
        task_api=FileTaskApi(world, crash_hook=killer),
        settings=FakeSettings(max_active_transactions=3, retry_initial_delay=0.01),
        breakers=BreakerRegistry(BreakerConfig(failure_threshold=1000, window_size=1000)),
        bus=bus,
        artifacts_dir=root / "artifacts",
    )
    await coordinator.start(background=False)
    await coordinator.wait_idle()
    await coordinator.deliver_outbox()
    await coordinator.retry_compensations()
    done = await coordinator.journal.submitted_rounds(MINER)
    todo = [make_spec(r) for r in range(1, rounds + 1) if r not in done]
    await asyncio.gather(*(coordinator.run_transaction(spec) for spec in todo))
    await coordinator.deliver_outbox()
    await coordinator.close()
    world.close()


if __name__ == "__main__":
    asyncio.run(
        main(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else None)
    )
