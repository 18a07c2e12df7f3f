"""The power throttle's controller: a duty fraction per GPU toward `gpu_power_target_w`.

Pure logic (no NVML, no clock of its own): `PowerController.update` takes each GPU's power
reading and the time, and answers the duties to set (`ProcessTrainer.set_duty`). The
training worker sleeps after each step so that it trains `duty` of the time; a GPU's draw
is then about idle + (full − idle) × duty.

Why a duty cycle rather than the driver's power limit: setting an NVIDIA power limit needs
root (nvidia-smi -pl), and the app runs as the user.

The update is multiplicative, duty ← duty × (target / power)^gain, over the mean of the
readings since the last change (NVML's reading of a duty-cycled GPU jumps between the busy
and the sleeping draw; the mean over a period is what the target is about). With power =
idle + k × duty the fixed point is power = target, and each update shrinks the error by
the factor 1 − gain × (1 − idle / target), in (0, 1) for 0 < gain ≤ 1: it converges without
overshoot. Readings within `deadband` of the target change nothing (no hunting). A target
under the GPU's idle draw cannot be met: the duty settles at `MIN_DUTY` and the device is
reported as `unreachable`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from r3mes_desktop.core.errors import ValidationError

MIN_DUTY = 0.05


@dataclass
class _Gpu:
    duty: float = 1.0
    samples: list[float] = field(default_factory=list)
    since: float | None = None  # when the current averaging period began


class PowerController:
    """Duties per device id ("cuda:0") toward one power target per GPU."""

    def __init__(
        self,
        target_w: float,
        *,
        period_s: float = 3.0,
        gain: float = 0.8,
        deadband: float = 0.03,
        min_duty: float = MIN_DUTY,
    ) -> None:
        if not 0 < gain <= 1:
            raise ValidationError(f"gain must be in (0, 1], got {gain!r}")
        if not MIN_DUTY <= min_duty <= 1:
            raise ValidationError(f"min_duty must be in {MIN_DUTY:g}..1, got {min_duty!r}")
        self.target_w = self._checked(target_w)
        self.period_s = period_s
        self.gain = gain
        self.deadband = deadband
        self.min_duty = min_duty
        self._gpus: dict[str, _Gpu] = {}
        self.unreachable: set[str] = set()  # at the lowest duty and still over the target

    @staticmethod
    def _checked(target_w: float) -> float:
        if isinstance(target_w, bool) or not 0 < float(target_w) <= 1500:
            raise ValidationError(f"gpu_power_target_w must be in 0..1500 W, got {target_w!r}")
        return float(target_w)

    @property
    def duties(self) -> dict[str, float]:
        return {device: gpu.duty for device, gpu in self._gpus.items()}

    def set_target(self, target_w: float) -> None:
        """A new target (settings changed live): averaging starts over."""
        self.target_w = self._checked(target_w)
        for gpu in self._gpus.values():
            gpu.samples.clear()
            gpu.since = None
        self.unreachable.clear()

    def forget(self, device: str) -> None:
        """A device that stopped training (paused, idle, disabled): its next readings
        start a fresh average, keeping the duty it had learnt."""
        gpu = self._gpus.get(device)
        if gpu is not None:
            gpu.samples.clear()
            gpu.since = None

    def update(self, readings: Mapping[str, float], now: float) -> dict[str, float]:
        """Record each training GPU's power (W) at monotonic time `now`; returns the duties
        that changed, {device: duty}. Pass only devices that are training: a paused GPU's
        idle draw says nothing about the duty."""
        changed: dict[str, float] = {}
        for device, watts in readings.items():
            gpu = self._gpus.setdefault(device, _Gpu())
            if gpu.since is None:
                gpu.since = now
            gpu.samples.append(float(watts))
            if now - gpu.since < self.period_s:
                continue
            mean = sum(gpu.samples) / len(gpu.samples)
            gpu.samples.clear()
            gpu.since = now
            duty = self._next(gpu.duty, mean)
            if duty <= self.min_duty and mean > self.target_w * (1 + self.deadband):
                self.unreachable.add(device)
            else:
                self.unreachable.discard(device)
            if duty != gpu.duty:
                gpu.duty = duty
                changed[device] = duty
        return changed

    def _next(self, duty: float, watts: float) -> float:
        if watts <= 0:
            return duty
        ratio = self.target_w / watts
        if abs(ratio - 1) <= self.deadband:
            return duty
        return min(1.0, max(self.min_duty, duty * float(ratio**self.gain)))
