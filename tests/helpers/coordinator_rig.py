"""A coordinator wired to in-process fakes, a ManualClock and a real journal in tmp_path."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from r3mes_desktop.core.clock import ManualClock
from r3mes_desktop.core.coordinator import Coordinator
from r3mes_desktop.core.events import Event, EventBus
from r3mes_desktop.core.journal import INLINE_GRADIENT_MAX, Journal
from r3mes_desktop.core.resilience.breaker import BreakerConfig, BreakerRegistry
from r3mes_desktop.support.config.settings import Settings
from tests.helpers.fakes import FakeChain, FakePow, FakeStore, FakeTaskApi, FakeTrainer, Faults


@dataclass
class Rig:
    tmp: Path
    clock: ManualClock
    bus: EventBus
    faults: Faults
    trainer: FakeTrainer
    pow: FakePow
    store: FakeStore
    chain: FakeChain
    task_api: FakeTaskApi
    settings: Settings
    coordinator: Coordinator
    events: list[Event] = field(default_factory=list)
    inline_gradient_max: int = INLINE_GRADIENT_MAX  # 0: every gradient is a file
    verdicts: bool = False  # the coordinator reads verdicts from the fake chain
    versions: bool = False  # ... and the network model's versions
    lanes: int = 1  # device lanes (a multi-GPU rig has one per device)
    models: Any = None  # the ModelStore rounds on a model version or dataset fetch through

    def of_kind(self, kind: type[Event]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    async def reopen(self) -> Coordinator:
        """Close the coordinator and build a new one on the same journal and world."""
        await self.coordinator.close()
        self.coordinator = build_coordinator(self)
        return self.coordinator


def build_coordinator(rig: Rig) -> Coordinator:
    breakers = BreakerRegistry(
        BreakerConfig(window_size=50, failure_threshold=50), clock=rig.clock, bus=rig.bus
    )
    return Coordinator(
        journal=Journal(rig.tmp / "journal.db", inline_gradient_max=rig.inline_gradient_max),
        trainer=rig.trainer,
        pow=rig.pow,
        store=rig.store,
        chain=rig.chain,
        task_api=rig.task_api,
        settings=rig.settings,
        breakers=breakers,
        bus=rig.bus,
        clock=rig.clock,
        artifacts_dir=rig.tmp / "artifacts",
        verdicts=rig.chain if rig.verdicts else None,
        versions=rig.chain if rig.versions else None,
        lanes=rig.lanes,
        models=rig.models,
    )


def make_rig(
    tmp: Path,
    *,
    inline_gradient_max: int = INLINE_GRADIENT_MAX,
    verdicts: bool = False,
    versions: bool = False,
    lanes: int = 1,
    **settings: Any,
) -> Rig:
    clock = ManualClock()
    bus = EventBus()
    faults = Faults()
    rig = Rig(
        tmp=tmp,
        clock=clock,
        bus=bus,
        faults=faults,
        trainer=FakeTrainer(faults, clock=clock),
        pow=FakePow(faults),
        store=FakeStore(faults),
        chain=FakeChain(faults),
        task_api=FakeTaskApi(faults),
        settings=Settings(**settings),
        coordinator=None,  # type: ignore[arg-type]
        inline_gradient_max=inline_gradient_max,
        verdicts=verdicts,
        versions=versions,
        lanes=lanes,
    )
    bus.subscribe(rig.events.append)
    rig.coordinator = build_coordinator(rig)
    return rig
