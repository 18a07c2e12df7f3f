"""One training worker per mining device: a multi-GPU rig trains a round on each GPU.

The saga sees one `Trainer`; `TrainerPool.train` waits for a device that is enabled, not
held back and not busy, and trains the round on that device's `ProcessTrainer` (a worker
process of its own, so a crash or a stuck driver on one GPU leaves the others running).
A round resumed after a pause or a crash goes back to the device it started on where it
can: its checkpoint continues bit for bit on the same kind of device.

Control is per device and takes effect at once, not at the next round: switching a device
off or holding it back (too hot) pauses its worker at the next training step, with the
checkpoint saved; switching it on or releasing the hold resumes the round from there. The
pool-wide `pause()` (the governor: computer in use, on battery, …) pauses every worker the
same way. Every device shares one checkpoint root and one trace root, so a transaction's
files are found whichever device trained it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from r3mes_desktop.core.errors import ValidationError

if TYPE_CHECKING:
    from r3mes_desktop.adapters.mining.settings import MiningConfig
    from r3mes_desktop.adapters.mining.worker import ProcessTrainer
    from r3mes_desktop.core.steps import ProgressCallback, RoundSpec, TrainingResult

log = logging.getLogger(__name__)


class TrainerPool:
    def __init__(
        self,
        members: Mapping[str, ProcessTrainer],
        *,
        enabled: Iterable[str] | None = None,
    ) -> None:
        """`members`: one trainer per device id (`cpu`, `cuda:0`, …), built over one
        checkpoint root; `enabled`: the devices that take rounds (default: all)."""
        if not members:
            raise ValidationError("a trainer pool needs at least one device")
        self.members: dict[str, ProcessTrainer] = dict(members)
        self._enabled = self._known(enabled if enabled is not None else self.members)
        self._held: dict[str, str] = {}  # device -> why the governor holds it back
        self._busy: dict[str, str] = {}  # device -> the transaction training on it
        self._affinity: dict[str, str] = {}  # transaction -> the device it started on
        self._paused = False
        self._changed: asyncio.Condition | None = None
        self.on_capacity: Callable[[], None] | None = None  # the miner's wake()
        # (device, transaction) of the latest rounds given to a device, newest last
        self.trained: deque[tuple[str, str]] = deque(maxlen=256)

    def _known(self, devices: Iterable[str]) -> set[str]:
        wanted = set(devices)
        unknown = sorted(wanted - set(self.members))
        if unknown:
            raise ValidationError(
                f"mining_devices names {', '.join(unknown)}, which this rig has no worker "
                f"for (workers: {', '.join(sorted(self.members))})"
            )
        return wanted

    # -- what the runtime and the saga read ---------------------------------------------
    @property
    def config(self) -> MiningConfig:
        """The first device's config (proof of work sizes itself from it)."""
        return next(iter(self.members.values())).config

    @property
    def miner(self) -> str | None:
        return next(iter(self.members.values())).miner

    @miner.setter
    def miner(self, address: str | None) -> None:
        for member in self.members.values():
            member.miner = address

    @property
    def trace_root(self) -> Path:
        return next(iter(self.members.values())).trace_root

    @property
    def enabled(self) -> frozenset[str]:
        return frozenset(self._enabled)

    @property
    def held(self) -> Mapping[str, str]:
        return dict(self._held)

    @property
    def capacity(self) -> int:
        """Rounds that can train at once now: devices enabled and not held back."""
        return len(self._usable())

    def busy(self) -> Mapping[str, str]:
        """Device → the transaction training on it now."""
        return dict(self._busy)

    @property
    def paused(self) -> bool:
        return self._paused

    def _usable(self) -> set[str]:
        return {d for d in self._enabled if d not in self._held}

    # -- control ------------------------------------------------------------------------
    def set_enabled(self, devices: Iterable[str]) -> None:
        """Switch devices on and off now: a round on a device switched off pauses at its
        next step (checkpointed) and resumes when the device is switched on again."""
        self._enabled = self._known(devices)
        self._apply_all()

    def add(self, device: str, trainer: ProcessTrainer) -> None:
        """A worker for a device first switched on while running (disabled until
        `set_enabled` names it)."""
        if device in self.members:
            raise ValidationError(f"device {device} already has a worker")
        trainer.miner = self.miner
        self.members[device] = trainer
        self._apply(device)

    def hold(self, device: str, reason: str) -> None:
        """Hold one device back (the governor: too hot); its round pauses at the next step."""
        self._known([device])
        self._held[device] = reason
        self._apply(device)

    def release(self, device: str) -> None:
        if self._held.pop(device, None) is not None:
            self._apply(device)

    def pause(self) -> None:
        self._paused = True
        self._apply_all()

    def resume(self) -> None:
        self._paused = False
        self._apply_all()

    def stop(self) -> None:
        for member in self.members.values():
            member.stop()

    def finish_then_stop(self) -> None:
        for member in self.members.values():
            member.finish_then_stop()

    def _wants_pause(self, device: str) -> bool:
        return self._paused or device not in self._enabled or device in self._held

    def _apply(self, device: str) -> None:
        member = self.members[device]
        if self._wants_pause(device):
            if not member.paused:
                member.pause()
        elif member.paused:
            member.resume()
        self._notify()

    def _apply_all(self) -> None:
        for device in self.members:
            self._apply(device)

    def _notify(self) -> None:
        if self._changed is not None:
            condition = self._changed

            async def wake() -> None:
                async with condition:
                    condition.notify_all()

            with contextlib.suppress(RuntimeError):  # no loop: nothing can be waiting
                asyncio.get_running_loop().create_task(wake())
        if self.on_capacity is not None:
            self.on_capacity()

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        """Warm up every enabled device's worker (their torch imports run in parallel)."""
        await asyncio.gather(*(self.members[d].start() for d in sorted(self._enabled)))

    async def shutdown(self) -> None:
        await asyncio.gather(*(m.shutdown() for m in self.members.values()))

    # -- Trainer protocol -----------------------------------------------------------------
    async def discard_checkpoints(self, transaction_id: str) -> None:
        self._affinity.pop(transaction_id, None)
        await next(iter(self.members.values())).discard_checkpoints(transaction_id)

    async def train(
        self,
        *,
        transaction_id: str,
        spec: RoundSpec,
        progress: ProgressCallback,
        adapter_path: str | None = None,
        dataset_path: str | None = None,
    ) -> TrainingResult:
        device = await self._acquire(transaction_id)
        try:
            return await self.members[device].train(
                transaction_id=transaction_id,
                spec=spec,
                progress=progress,
                adapter_path=adapter_path,
                dataset_path=dataset_path,
            )
        finally:
            self._busy.pop(device, None)
            self._notify()

    async def _acquire(self, transaction_id: str) -> str:
        if self._changed is None:
            self._changed = asyncio.Condition()
        async with self._changed:
            while True:
                device = self._pick(transaction_id)
                if device is not None:
                    self._busy[device] = transaction_id
                    self._affinity[transaction_id] = device
                    self.trained.append((device, transaction_id))
                    return device
                await self._changed.wait()

    def _pick(self, transaction_id: str) -> str | None:
        free = sorted(d for d in self._usable() if d not in self._busy)
        if not free:
            return None
        started_on = self._affinity.get(transaction_id)
        return started_on if started_on in free else free[0]


def pool_of(
    devices: Iterable[str],
    build: Callable[[str], ProcessTrainer],
    *,
    enabled: Iterable[str] | None = None,
) -> TrainerPool:
    """A pool with a trainer per device, built by `build(device)`."""
    return TrainerPool({device: build(device) for device in devices}, enabled=enabled)
