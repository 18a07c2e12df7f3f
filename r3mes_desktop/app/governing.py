"""The governor loop: twice a second, ask the governor whether mining may run, and pause
or resume the miner to match.

Twice, not once: input must reach every worker within 1 s, and the worker needs its next
step boundary and a checkpoint save on top of the governor's period; with a 1 s period
`bench/governor.py` measured 1.004 s in the worst of 8 cycles.

A hold pauses both the miner (no new round) and the trainer (the running round stops at
its next step and checkpoints: `ProcessTrainer.pause`), so input reaches every worker
within a second and nothing is lost; releasing the hold resumes the trainer from the
checkpoint and starts the miner again. Only a pause the governor made is undone by it: a
miner the user stopped stays stopped. Each change of the decision is published as a
`GovernorStateChanged` event (the status bar, `r3mes-miner run` and, later, /metrics show
it); a change is one of `Decision.state` (may run, which policies hold, what is unknown),
not a figure inside a reason, so a hold on CPU load is one event, not one per second.

The evaluation runs in a worker thread: listing processes with psutil takes tens of
milliseconds, too long to block the event loop every second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Protocol, TypeGuard

from r3mes_desktop.core.clock import SYSTEM_CLOCK, Clock
from r3mes_desktop.core.events import EventBus, GovernorStateChanged, Notice
from r3mes_desktop.core.governor import (
    BatteryRule,
    Decision,
    Governor,
    GpuTemperature,
    MaxOtherCpu,
    OnlyWhenIdle,
    PauseWhile,
    Policy,
    Sources,
    TimeWindows,
    Window,
)
from r3mes_desktop.core.miner import Miner, MinerState
from r3mes_desktop.support.config import Settings

log = logging.getLogger(__name__)


class Pausable(Protocol):
    """What the loop needs of the trainer (`ProcessTrainer`)."""

    def pause(self) -> None: ...

    def resume(self) -> None: ...


class DeviceControl(Protocol):
    """What the loop needs to hold one device back (`TrainerPool`)."""

    members: Mapping[str, object]

    @property
    def enabled(self) -> frozenset[str]: ...

    @property
    def held(self) -> Mapping[str, str]: ...

    @property
    def capacity(self) -> int: ...

    def hold(self, device: str, reason: str) -> None: ...

    def release(self, device: str) -> None: ...


def policies_from(settings: Settings) -> list[Policy]:
    """The policies the settings turn on; none (the defaults) is "always"."""
    policies: list[Policy] = []
    if settings.governor_idle_minutes > 0:
        policies.append(OnlyWhenIdle(settings.governor_idle_minutes))
    if settings.governor_windows:
        policies.append(TimeWindows(tuple(Window.parse(w) for w in settings.governor_windows)))
    if settings.governor_not_on_battery:
        policies.append(BatteryRule())
    elif settings.governor_battery_floor > 0:
        policies.append(BatteryRule(floor=settings.governor_battery_floor))
    if settings.governor_max_other_cpu < 100:
        policies.append(MaxOtherCpu(settings.governor_max_other_cpu))
    if settings.governor_pause_while:
        policies.append(PauseWhile(settings.governor_pause_while))
    if settings.governor_gpu_temp_limit > 0:
        policies.append(
            GpuTemperature(settings.governor_gpu_temp_limit, settings.governor_gpu_temp_delta)
        )
    return policies


def system_sources(policies: list[Policy], bus: EventBus | None = None) -> Sources:
    """The real sources the policies read (only those: no X display is opened for a
    governor without an idle policy). Idle time comes from the platform's source: X11,
    logind (Wayland), Windows or macOS (`adapters.governor.idle`)."""
    from r3mes_desktop.adapters.governor.idle import idle_source_for_platform
    from r3mes_desktop.adapters.governor.nvml import NvmlGpus
    from r3mes_desktop.adapters.governor.system import (
        PsutilCpuLoad,
        PsutilPower,
        PsutilProcesses,
    )

    kinds = {type(p) for p in policies}
    return Sources(
        idle=idle_source_for_platform(bus) if OnlyWhenIdle in kinds else None,
        power=PsutilPower(bus) if BatteryRule in kinds else None,
        cpu=PsutilCpuLoad(bus) if MaxOtherCpu in kinds else None,
        processes=PsutilProcesses(bus) if PauseWhile in kinds else None,
        gpu=NvmlGpus(bus) if GpuTemperature in kinds else None,
    )


def close_sources(sources: Sources) -> None:
    """Release what the sources hold (the X display, NVML)."""
    for source in (sources.idle, sources.gpu):
        close = getattr(source, "close", None)
        if close is not None:
            close()


class GovernorLoop:
    def __init__(
        self,
        governor: Governor,
        miner: Miner,
        bus: EventBus,
        *,
        trainer: Pausable | None = None,
        pow: Pausable | None = None,
        clock: Clock = SYSTEM_CLOCK,
        interval_s: float = 0.5,
    ) -> None:
        self.governor = governor
        self.miner = miner
        self.bus = bus
        self.trainer = trainer
        self.pow = pow  # proof of work: its searches wait at their gate while held
        self.clock = clock
        self.interval_s = interval_s
        self.decision: Decision | None = None
        self._holding = False  # the miner is paused because of the governor
        self._warned: set[tuple[int, str]] = set()  # deadline warnings said in this hold
        self._task: asyncio.Task[None] | None = None

    @property
    def holding(self) -> bool:
        return self._holding

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="governor-loop")

    async def stop(self) -> None:
        """Stop governing; a hold in place is released (the trainer is resumed) so the
        miner's own stop finds nothing the governor left paused; the sources are released
        (the X display, NVML)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._holding:
            self._resume_workers()
        self._holding = False
        if _controls_devices(self.trainer):
            for device in list(self.trainer.held):
                self.trainer.release(device)
        close_sources(self.governor.sources)

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:  # the loop must outlive any one bad evaluation
                log.exception("governor evaluation failed")
            await self.clock.sleep(self.interval_s)

    async def tick(self) -> Decision:
        """Evaluate once and act on it."""
        decision = await asyncio.to_thread(self.governor.evaluate)
        previous, self.decision = self.decision, decision
        if previous is None or decision.state != previous.state:
            log.info("governor: %s", decision.summary)
            self.bus.publish(
                GovernorStateChanged(
                    may_run=decision.may_run,
                    summary=decision.summary,
                    reasons=decision.reasons,
                    notes=decision.notes,
                    devices_held=tuple(reason for _, reason in decision.devices_held),
                    ts=self.clock.time(),
                )
            )
        await self._apply(decision)
        self._warn_deadlines(decision)
        return decision

    def _warn_deadlines(self, decision: Decision) -> None:
        """While mining is held back, say (once per round and kind) which running round
        must resume by when to meet its deadline, and which one will miss it now."""
        if not self._holding:
            self._warned.clear()
            return
        for round_id, kind, text in self.miner.deadline_warnings():
            if (round_id, kind) in self._warned:
                continue
            self._warned.add((round_id, kind))
            message = f"{text} — {decision.summary}"
            log.warning("%s", message)
            self.bus.publish(
                Notice(
                    level="warning" if kind == "late" else "info",
                    message=message,
                    source="governor",
                    ts=self.clock.time(),
                )
            )

    def _hold_devices(self, decision: Decision) -> bool:
        """Hold back exactly the devices the decision names (a worker of its own each);
        True when that leaves no device to mine on. A lone `auto` worker stands for the
        GPU it picked, so a hot GPU holds it."""
        pool = self.trainer
        if not _controls_devices(pool):
            return bool(decision.devices_held)
        wanted: dict[str, str] = {}
        for device, reason in decision.devices_held:
            if device in pool.members:
                wanted[device] = reason
            elif "auto" in pool.enabled and device == "cuda:0":
                wanted["auto"] = reason
        for device in [d for d in pool.held if d not in wanted]:
            pool.release(device)
        for device, reason in wanted.items():
            if pool.held.get(device) != reason:
                pool.hold(device, reason)
        return bool(wanted) and pool.capacity == 0

    def _workers(self) -> list[Pausable]:
        return [w for w in (self.trainer, self.pow) if w is not None]

    def _resume_workers(self) -> None:
        for worker in self._workers():
            worker.resume()

    async def _apply(self, decision: Decision) -> None:
        if self._hold_devices(decision) and decision.may_run:
            decision = Decision(False, tuple(r for _, r in decision.devices_held))
        state = self.miner.state
        if state in (MinerState.IDLE, MinerState.STOPPING):
            if self._holding:
                self._resume_workers()  # a stopped miner starts unpaused next time
            self._holding = False
            return
        if not decision.may_run:
            if state is MinerState.MINING:
                self._holding = True
                for worker in self._workers():
                    worker.pause()
                await self.miner.pause()
            return
        if self._holding:
            self._holding = False
            self._resume_workers()
            if state in (MinerState.PAUSING, MinerState.PAUSED):
                await self.miner.start()


def _controls_devices(trainer: object) -> TypeGuard[DeviceControl]:
    return all(hasattr(trainer, name) for name in ("hold", "release", "held", "members"))


def start_governor(
    settings: Settings,
    *,
    miner: Miner,
    bus: EventBus,
    trainer: Pausable | None,
    pow: Pausable | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> GovernorLoop | None:
    """The governor loop the settings ask for, started; None when no policy is on (the
    default: mining always allowed, nothing runs)."""
    policies = policies_from(settings)
    if not policies:
        return None
    governor = Governor(policies, system_sources(policies, bus), clock=clock)
    loop = GovernorLoop(governor, miner, bus, trainer=trainer, pow=pow, clock=clock)
    loop.start()
    return loop
