"""The power throttle's loop: read each GPU's power draw, set its worker's duty.

`start_power_throttle` starts it when `gpu_power_target_w` is set (the runtime starts and
stops it, like the governor loop). Twice a second it reads NVML (`power_watts()`, by NVML
index; `cuda:N` is taken as index N) for the GPU workers that are training now, feeds the
readings to `adapters.mining.throttle.PowerController`, and hands the duties that changed
to the workers (`ProcessTrainer.set_duty`). A worker that is not training (paused by the
governor, between rounds) gives no readings: its idle draw says nothing about its duty.
The CPU worker is never throttled by power (the thread cap and the priority are its caps).

Stopping sets every worker's duty back to 1 (full speed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Protocol

from r3mes_desktop.adapters.mining.throttle import PowerController
from r3mes_desktop.core.clock import SYSTEM_CLOCK, Clock
from r3mes_desktop.core.events import EventBus, Notice
from r3mes_desktop.core.governor import Unknown
from r3mes_desktop.support.config import Settings

log = logging.getLogger(__name__)

SAMPLE_S = 0.5


class DutyControlled(Protocol):
    """What the loop needs of a training worker (`ProcessTrainer`)."""

    @property
    def training(self) -> bool: ...

    @property
    def duty(self) -> float: ...

    def set_duty(self, fraction: float) -> None: ...


class GpuPowerSource(Protocol):
    def power_watts(self) -> Mapping[int, float] | Unknown:
        """Each GPU's power draw in W, by NVML index."""
        ...


def cuda_index(device: str) -> int | None:
    """`cuda:1` → 1, `cuda` → 0; None for the CPU and anything else."""
    kind, _, number = device.partition(":")
    if kind != "cuda":
        return None
    return int(number) if number.isdigit() else 0 if not number else None


class PowerThrottle:
    """The loop over a controller; `stop()` ends it and restores full duty."""

    def __init__(
        self,
        controller: PowerController,
        members: Mapping[str, DutyControlled],
        source: GpuPowerSource,
        *,
        bus: EventBus | None = None,
        clock: Clock = SYSTEM_CLOCK,
        sample_s: float = SAMPLE_S,
    ) -> None:
        self.controller = controller
        self.members = members  # read each tick: devices enabled live come and go
        self.source = source
        self.bus = bus
        self.clock = clock
        self.sample_s = sample_s
        self._task: asyncio.Task[None] | None = None
        self._unknown: str | None = None
        self._told_unreachable: set[str] = set()

    @property
    def duties(self) -> dict[str, float]:
        return self.controller.duties

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for member in list(self.members.values()):
            with contextlib.suppress(Exception):
                if member.duty != 1.0:
                    member.set_duty(1.0)

    def set_target(self, target_w: float) -> None:
        self.controller.set_target(target_w)

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("power throttle step failed")
            await asyncio.sleep(self.sample_s)

    async def tick(self) -> dict[str, float]:
        """One reading and control step; returns the duties that changed."""
        gpus = {
            device: member
            for device, member in self.members.items()
            if cuda_index(device) is not None
        }
        training = {device: m for device, m in gpus.items() if m.training}
        for device in gpus.keys() - training.keys():
            self.controller.forget(device)
        if not training:
            return {}
        readings = await asyncio.to_thread(self.source.power_watts)
        if isinstance(readings, Unknown):
            self._note_unknown(readings.why)
            return {}
        self._unknown = None
        watts: dict[str, float] = {}
        for device in training:
            index = cuda_index(device)
            if index is not None and index in readings:
                watts[device] = readings[index]
        changed = self.controller.update(watts, self.clock.monotonic())
        for device, duty in changed.items():
            training[device].set_duty(duty)
        self._note_unreachable()
        return changed

    def _note_unknown(self, why: str) -> None:
        if self._unknown is None:
            self._notice(
                "warning",
                f"GPU power cannot be read ({why}): gpu_power_target_w is not applied",
            )
        self._unknown = why

    def _note_unreachable(self) -> None:
        for device in sorted(self.controller.unreachable - self._told_unreachable):
            self._notice(
                "warning",
                f"{device} draws more than {self.controller.target_w:g} W even at the "
                f"lowest duty ({self.controller.min_duty:.0%}): gpu_power_target_w is below "
                "what this GPU can reach while mining",
            )
        self._told_unreachable = set(self.controller.unreachable)

    def _notice(self, level: str, message: str) -> None:
        log.warning("%s", message)
        if self.bus is not None:
            self.bus.publish(Notice(level=level, message=message, source="governor"))


def start_power_throttle(
    settings: Settings,
    members: Mapping[str, DutyControlled],
    bus: EventBus | None,
    power_source: GpuPowerSource,
    *,
    clock: Clock = SYSTEM_CLOCK,
) -> PowerThrottle | None:
    """Start the throttle when `gpu_power_target_w` is set (else None); `members` are the
    training workers by device id (`TrainerPool.members`, read live)."""
    if not settings.gpu_power_target_w:
        return None
    throttle = PowerThrottle(
        PowerController(settings.gpu_power_target_w), members, power_source, bus=bus, clock=clock
    )
    throttle.start()
    return throttle
