"""The governor loop against the real miner: a hold pauses miner and trainer, a release
resumes them; only the governor's own pause is undone by it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from r3mes_desktop.app.governing import (
    GovernorLoop,
    policies_from,
    start_governor,
    system_sources,
)
from r3mes_desktop.core.clock import SystemClock
from r3mes_desktop.core.events import GovernorStateChanged
from r3mes_desktop.core.governor import (
    BatteryRule,
    Governor,
    MaxOtherCpu,
    OnlyWhenIdle,
    PauseWhile,
    Sources,
    TimeWindows,
    Unknown,
)
from r3mes_desktop.core.miner import Miner, MinerState
from r3mes_desktop.support.config import Settings
from tests.helpers.coordinator_rig import Rig, make_rig


@dataclass
class DrivenIdle:
    seconds: float | Unknown = 0.0

    def idle_seconds(self) -> float | Unknown:
        return self.seconds


@dataclass
class RecordingTrainer:
    calls: list[str] = field(default_factory=list)

    def pause(self) -> None:
        self.calls.append("pause")

    def resume(self) -> None:
        self.calls.append("resume")


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    rig = make_rig(tmp_path, max_active_transactions=3)
    await rig.coordinator.start(background=False)
    yield rig
    await rig.coordinator.close()


def _loop(rig: Rig, idle: DrivenIdle) -> tuple[GovernorLoop, Miner, RecordingTrainer]:
    miner = Miner(rig.coordinator, rig.chain, rig.bus, clock=rig.clock, poll_interval_s=0.05)
    trainer = RecordingTrainer()
    governor = Governor([OnlyWhenIdle(1)], Sources(idle=idle), clock=rig.clock)
    return GovernorLoop(governor, miner, rig.bus, trainer=trainer, clock=rig.clock), miner, trainer


def _state(miner: Miner) -> MinerState:
    """The state now (a function, so mypy does not narrow it across awaits)."""
    return miner.state


async def test_input_pauses_and_idle_resumes(rig: Rig) -> None:
    idle = DrivenIdle(600.0)
    loop, miner, trainer = _loop(rig, idle)
    await miner.start()
    assert (await loop.tick()).may_run
    assert _state(miner) is MinerState.MINING and trainer.calls == []

    idle.seconds = 0.1
    decision = await loop.tick()
    assert decision.summary == "paused: computer in use — resumes after 1 min idle"
    assert _state(miner) is MinerState.PAUSED and trainer.calls == ["pause"]
    await loop.tick()  # still held: nothing more to do
    assert trainer.calls == ["pause"]

    idle.seconds = 60.0
    await loop.tick()
    assert _state(miner) is MinerState.MINING and trainer.calls == ["pause", "resume"]
    events = rig.of_kind(GovernorStateChanged)
    assert [e.may_run for e in events] == [True, False, True]  # one per change, not per tick
    assert events[1].reasons == ("computer in use — resumes after 1 min idle",)
    await miner.stop()


async def test_a_pause_by_the_user_is_not_undone(rig: Rig) -> None:
    idle = DrivenIdle(600.0)
    loop, miner, trainer = _loop(rig, idle)
    await miner.start()
    await miner.pause()
    await loop.tick()
    assert _state(miner) is MinerState.PAUSED and trainer.calls == []
    await miner.stop()


async def test_a_stopped_miner_is_left_stopped_and_its_trainer_unpaused(rig: Rig) -> None:
    idle = DrivenIdle(0.0)
    loop, miner, trainer = _loop(rig, idle)
    await miner.start()
    await loop.tick()
    assert loop.holding
    await miner.stop()
    idle.seconds = 600.0
    await loop.tick()
    assert _state(miner) is MinerState.IDLE and not loop.holding
    assert trainer.calls == ["pause", "resume"]


async def test_the_loop_runs_every_interval_and_stop_releases_the_hold(rig: Rig) -> None:
    idle = DrivenIdle(600.0)
    miner = Miner(rig.coordinator, rig.chain, rig.bus, clock=rig.clock, poll_interval_s=0.05)
    trainer = RecordingTrainer()
    governor = Governor([OnlyWhenIdle(1)], Sources(idle=idle))
    loop = GovernorLoop(
        governor, miner, rig.bus, trainer=trainer, clock=SystemClock(), interval_s=0.01
    )
    await miner.start()
    loop.start()
    idle.seconds = 0.0
    for _ in range(500):
        if _state(miner) is MinerState.PAUSED:
            break
        await asyncio.sleep(0.01)
    assert _state(miner) is MinerState.PAUSED
    await loop.stop()
    assert trainer.calls == ["pause", "resume"] and not loop.holding
    await miner.stop()


def test_policies_from_settings() -> None:
    assert policies_from(Settings()) == []  # the defaults mine always
    policies = policies_from(
        Settings(
            governor_idle_minutes=3,
            governor_windows=("sat:09:00-17:00",),
            governor_battery_floor=30,
            governor_max_other_cpu=50,
            governor_pause_while=("steam",),
        )
    )
    assert [type(p) for p in policies] == [
        OnlyWhenIdle,
        TimeWindows,
        BatteryRule,
        MaxOtherCpu,
        PauseWhile,
    ]
    assert BatteryRule(floor=30) in policies
    assert BatteryRule() in policies_from(
        Settings(governor_not_on_battery=True, governor_battery_floor=30)
    )


def test_system_sources_open_only_what_the_policies_read() -> None:
    sources = system_sources([MaxOtherCpu(50)])
    assert sources.cpu is not None
    assert sources.idle is None and sources.power is None and sources.gpu is None


@dataclass
class DrivenCpu:
    load: float

    def other_cpu_percent(self) -> float:
        return self.load


async def test_a_moving_figure_in_a_reason_is_not_a_new_event(rig: Rig) -> None:
    cpu = DrivenCpu(73.0)
    miner = Miner(rig.coordinator, rig.chain, rig.bus, clock=rig.clock, poll_interval_s=0.05)
    governor = Governor([MaxOtherCpu(50)], Sources(cpu=cpu), clock=rig.clock)
    loop = GovernorLoop(governor, miner, rig.bus, clock=rig.clock)
    await miner.start()
    for load in (73.0, 81.0, 64.0, 20.0, 30.0):
        cpu.load = load
        await loop.tick()
    events = rig.of_kind(GovernorStateChanged)
    assert [(e.may_run, e.reasons) for e in events] == [
        (False, ("other programs use 73% CPU (limit 50%) — resumes when they use less",)),
        (True, ()),
    ]
    assert loop.decision is not None and loop.decision.reasons == ()
    await miner.stop()


async def test_start_governor_runs_only_when_a_policy_is_on(rig: Rig) -> None:
    miner = Miner(rig.coordinator, rig.chain, rig.bus, clock=rig.clock, poll_interval_s=0.05)
    assert start_governor(Settings(), miner=miner, bus=rig.bus, trainer=None) is None
    trainer = RecordingTrainer()
    loop = start_governor(
        Settings(governor_pause_while=("python", "python3", "pytest")),
        miner=miner,
        bus=rig.bus,
        trainer=trainer,
    )
    assert loop is not None
    await miner.start()
    for _ in range(500):  # this very process is a running "python": held
        if _state(miner) is MinerState.PAUSED:
            break
        await asyncio.sleep(0.01)
    assert _state(miner) is MinerState.PAUSED and trainer.calls == ["pause"]
    await loop.stop()
    await miner.stop()


@dataclass
class FakeGpus:
    temps: dict[int, float] = field(default_factory=dict)

    def temperatures_c(self) -> dict[int, float]:
        return self.temps


@dataclass
class Member:
    paused: bool = False
    miner: str | None = None

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False


async def test_a_hot_gpu_holds_only_its_own_worker_and_all_hot_pauses_mining(rig: Rig) -> None:
    from r3mes_desktop.adapters.mining.pool import TrainerPool
    from r3mes_desktop.core.governor import GpuTemperature

    members = {"cuda:0": Member(), "cuda:1": Member()}
    pool = TrainerPool(members)  # type: ignore[arg-type]
    gpus = FakeGpus({0: 60.0, 1: 60.0})
    miner = Miner(rig.coordinator, rig.chain, rig.bus, clock=rig.clock, poll_interval_s=0.05)
    governor = Governor([GpuTemperature(80, 5)], Sources(gpu=gpus), clock=rig.clock)
    loop = GovernorLoop(governor, miner, rig.bus, trainer=pool, clock=rig.clock)
    events: list[GovernorStateChanged] = []
    rig.bus.subscribe(lambda e: events.append(e) if isinstance(e, GovernorStateChanged) else None)
    await miner.start()
    try:
        gpus.temps = {0: 81.0, 1: 60.0}
        decision = await loop.tick()
        assert decision.may_run and _state(miner) is MinerState.MINING
        assert members["cuda:0"].paused and not members["cuda:1"].paused
        assert events[-1].devices_held == ("GPU 0 at 81 °C, resumes at 75 °C",)
        assert events[-1].summary == "held back: GPU 0 at 81 °C, resumes at 75 °C"

        gpus.temps = {0: 81.0, 1: 82.0}  # no device left: mining pauses as a whole
        await loop.tick()
        assert loop.holding and _state(miner) in (MinerState.PAUSING, MinerState.PAUSED)
        assert all(m.paused for m in members.values())

        gpus.temps = {0: 74.0, 1: 76.0}  # GPU 0 cooled below its resume point, GPU 1 not
        await loop.tick()
        assert not members["cuda:0"].paused and members["cuda:1"].paused
        assert not loop.holding and _state(miner) is MinerState.MINING

        await loop.stop()  # stopping the governor releases every hold it made
        assert not any(m.paused for m in members.values()) and pool.held == {}
    finally:
        await miner.stop()


async def test_a_hold_says_which_round_must_resume_by_when_then_that_it_is_late(
    tmp_path: Path,
) -> None:
    import dataclasses

    from r3mes_desktop.core.events import Notice
    from tests.helpers.fakes import make_spec

    rig = make_rig(tmp_path, max_active_transactions=3, transaction_timeout=3600)
    gate = asyncio.Event()

    async def half_trained(**kwargs: Any) -> Any:
        kwargs["progress"](0.5, {"step": 500})
        await gate.wait()
        raise AssertionError("the test ends before training does")

    rig.trainer.train = half_trained  # type: ignore[method-assign]
    await rig.coordinator.start(background=False)
    now = rig.clock.time()
    rig.chain.rounds = [dataclasses.replace(make_spec(1, steps=1000), deadline=int(now) + 600)]
    idle = DrivenIdle(0.0)
    loop, miner, _trainer = _loop(rig, idle)
    miner.step_rate.observe("earlier", 0, 0.0)
    miner.step_rate.observe("earlier", 10, 1.0)  # 10 steps/s measured before
    notices: list[Notice] = []
    rig.bus.subscribe(lambda e: notices.append(e) if isinstance(e, Notice) else None)
    try:
        await miner.start()
        for _ in range(500):  # the round starts and reports step 500 of 1000
            if miner.deadline_warnings():
                break
            await asyncio.sleep(0.002)
        await loop.tick()
        assert loop.holding
        said = [n.message for n in notices if n.source == "governor"]
        assert len(said) == 1 and said[0].startswith("round 1 meets its deadline")
        assert said[0].endswith("— paused: computer in use — resumes after 1 min idle")
        await loop.tick()  # said once per hold, not every tick
        assert len([n for n in notices if n.source == "governor"]) == 1

        rig.clock.advance(560)  # 500 steps at 10/s need 50 s: 40 s left is too late
        await loop.tick()
        late = [n for n in notices if n.source == "governor"][-1]
        assert late.level == "warning" and late.message.startswith("round 1 will miss")
    finally:
        await loop.stop()
        await miner.stop()
        await rig.coordinator.close()


async def test_a_hold_pauses_proof_of_work_too(rig: Rig) -> None:
    idle = DrivenIdle(600.0)
    miner = Miner(rig.coordinator, rig.chain, rig.bus, clock=rig.clock, poll_interval_s=0.05)
    trainer, pow_ = RecordingTrainer(), RecordingTrainer()
    governor = Governor([OnlyWhenIdle(1)], Sources(idle=idle), clock=rig.clock)
    loop = GovernorLoop(governor, miner, rig.bus, trainer=trainer, pow=pow_, clock=rig.clock)
    await miner.start()
    try:
        idle.seconds = 0.0
        await loop.tick()
        assert trainer.calls == pow_.calls == ["pause"]
        idle.seconds = 600.0
        await loop.tick()
        assert trainer.calls == pow_.calls == ["pause", "resume"]
    finally:
        await loop.stop()
        await miner.stop()
