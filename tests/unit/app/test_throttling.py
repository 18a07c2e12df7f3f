"""The power throttle's loop: readings of training GPUs in, duties out; stop restores
full speed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from r3mes_desktop.adapters.mining.throttle import PowerController
from r3mes_desktop.app.throttling import PowerThrottle, cuda_index, start_power_throttle
from r3mes_desktop.core.events import EventBus, Notice
from r3mes_desktop.core.governor import Unknown
from r3mes_desktop.support.config import Settings


@dataclass
class Worker:
    training: bool = True
    duty: float = 1.0
    set: list[float] = field(default_factory=list)

    def set_duty(self, fraction: float) -> None:
        self.duty = fraction
        self.set.append(fraction)


@dataclass
class Source:
    watts: Mapping[int, float] | Unknown
    reads: int = 0

    def power_watts(self) -> Mapping[int, float] | Unknown:
        self.reads += 1
        return self.watts


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


def test_cuda_ids_map_to_nvml_indexes() -> None:
    assert cuda_index("cuda:0") == 0 and cuda_index("cuda:3") == 3 and cuda_index("cuda") == 0
    assert cuda_index("cpu") is None and cuda_index("mps") is None


async def test_only_training_gpus_are_throttled_and_stop_restores_full_duty() -> None:
    members = {"cuda:0": Worker(), "cuda:1": Worker(training=False), "cpu": Worker()}
    source = Source({0: 400.0, 1: 400.0})
    clock = Clock()
    throttle = PowerThrottle(PowerController(200.0, period_s=1.0), members, source, clock=clock)
    for _ in range(3):
        await throttle.tick()
        clock.now += 0.5
    assert members["cuda:0"].set and members["cuda:0"].duty < 1.0
    assert members["cuda:1"].set == [] and members["cpu"].set == []
    await throttle.stop()
    assert members["cuda:0"].duty == 1.0


async def test_nothing_is_read_while_no_gpu_trains() -> None:
    members = {"cuda:0": Worker(training=False)}
    source = Source({0: 400.0})
    throttle = PowerThrottle(PowerController(200.0), members, source, clock=Clock())
    assert await throttle.tick() == {}
    assert source.reads == 0


async def test_unreadable_power_is_one_notice_and_no_change() -> None:
    bus = EventBus()
    notices: list[str] = []
    bus.subscribe(lambda e: notices.append(e.message) if isinstance(e, Notice) else None)
    members = {"cuda:0": Worker()}
    clock = Clock()
    throttle = PowerThrottle(
        PowerController(200.0, period_s=1.0),
        members,
        Source(Unknown("NVML is not available")),
        bus=bus,
        clock=clock,
    )
    for _ in range(4):
        await throttle.tick()
        clock.now += 0.5
    assert members["cuda:0"].set == []
    assert len(notices) == 1 and "gpu_power_target_w is not applied" in notices[0]


async def test_an_unreachable_target_is_said_once() -> None:
    bus = EventBus()
    notices: list[str] = []
    bus.subscribe(lambda e: notices.append(e.message) if isinstance(e, Notice) else None)
    members = {"cuda:0": Worker()}
    clock = Clock()
    throttle = PowerThrottle(
        PowerController(40.0, period_s=1.0), members, Source({0: 70.0}), bus=bus, clock=clock
    )
    for _ in range(40):
        await throttle.tick()
        clock.now += 0.5
    assert members["cuda:0"].duty == 0.05
    assert len(notices) == 1 and "lowest duty" in notices[0]


async def test_started_only_with_a_target() -> None:
    assert start_power_throttle(Settings(), {}, None, Source({})) is None
    throttle = start_power_throttle(Settings(gpu_power_target_w=250), {}, None, Source({}))
    assert throttle is not None
    assert throttle.controller.target_w == 250
    await throttle.stop()
