"""The process the crash test kills: runs rounds against the file-backed world.

Usage: python -m tests.helpers.crash_worker DIR ROUNDS [OP:PHASE:K]
It kills itself with SIGKILL at the K-th time it reaches OP/PHASE (an effect in a fake, or
"state:<new_state>" right after a journal commit), so every step gets killed inside, at
points a timer could only hit by luck. Without a kill spec it runs to the end and exits 0.
Even rounds train on model version 1, so they pass through FETCH: the fake model store
writes its file in two halves (a kill between them leaves it torn on disk) and the
trainer exits with an error, not a kill, if it is ever handed bytes that are not the
version's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import signal
import sys
from pathlib import Path
from typing import Any

from r3mes_desktop.core.coordinator import Coordinator
from r3mes_desktop.core.events import Event, EventBus, TransactionStateChanged
from r3mes_desktop.core.journal import Journal
from r3mes_desktop.core.resilience.breaker import BreakerConfig, BreakerRegistry
from r3mes_desktop.core.steps import RoundSpec, TrainingResult
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


ADAPTER = b"network adapter of model version 1 " * 64
ADAPTER_SHA = hashlib.sha256(ADAPTER).hexdigest()


def _write_torn(path: Path, data: bytes, killer: Killer) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
        f.flush()
        os.fsync(f.fileno())
        killer("fetch", "torn")  # a kill here leaves half the file where a whole one goes
        f.write(data[len(data) // 2 :])


def _sha_of(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


class FileModels:
    """A ModelStore like the app's cache (a file whose bytes hash right is reused, anything
    else is fetched again) that writes in place, so a kill inside a fetch leaves a torn file
    where a journaled path points; `evict` empties it at the start, so recovered
    transactions find their journaled files gone. Only the saga's own hashing stands
    between either and the trainer."""

    def __init__(self, root: Path, killer: Killer, *, evict: bool) -> None:
        self.root = root
        self.killer = killer
        for old in root.glob("*.bin") if evict else ():
            old.unlink()

    async def fetch(self, cid: str, sha256: str) -> str:
        self.killer("fetch", "before")
        path = self.root / f"{sha256}.bin"
        if _sha_of(path) != sha256:
            _write_torn(path, ADAPTER, self.killer)
        self.killer("fetch", "after")
        return str(path)


class CheckingTrainer(FakeTrainer):
    """Refuses (and so fails the test) to train on an adapter that is not version 1's."""

    async def train(  # type: ignore[override]
        self, *, transaction_id: str, spec: RoundSpec, progress: Any, **files: str
    ) -> TrainingResult:
        if spec.model_version:
            got = _sha_of(Path(files["adapter_path"]))
            if got != ADAPTER_SHA:
                print(f"trained on unverified adapter bytes: {got}", file=sys.stderr)
                os._exit(3)
        return await super().train(transaction_id=transaction_id, spec=spec, progress=progress)


def round_spec(round_id: int) -> RoundSpec:
    spec = make_spec(round_id)
    if round_id % 2:
        return spec
    return dataclasses.replace(
        spec, model_version=1, model_cid="bafkversion1", model_sha256=ADAPTER_SHA
    )


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
        trainer=CheckingTrainer(crash_hook=killer),
        pow=FakePow(crash_hook=killer),
        store=FileStore(world, crash_hook=killer),
        chain=FileChain(world, crash_hook=killer),
        task_api=FileTaskApi(world, crash_hook=killer),
        settings=FakeSettings(max_active_transactions=3, retry_initial_delay=0.01),
        breakers=BreakerRegistry(BreakerConfig(failure_threshold=1000, window_size=1000)),
        bus=bus,
        artifacts_dir=root / "artifacts",
        models=FileModels(
            root / "models", killer, evict=os.environ.get("CRASH_EVICT_MODELS") == "1"
        ),
    )
    await coordinator.start(background=False)
    await coordinator.wait_idle()
    await coordinator.deliver_outbox()
    await coordinator.retry_compensations()
    done = await coordinator.journal.submitted_rounds(MINER)
    todo = [round_spec(r) for r in range(1, rounds + 1) if r not in done]
    await asyncio.gather(*(coordinator.run_transaction(spec) for spec in todo))
    await coordinator.deliver_outbox()
    await coordinator.close()
    world.close()


if __name__ == "__main__":
    asyncio.run(
        main(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else None)
    )
