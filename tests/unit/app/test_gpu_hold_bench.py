"""The GPU hold benchmark's measuring loops against a simulated GPU on a manual clock: the
app's power throttle and the governor's temperature policy, measured the way the
benchmark measures them on a real one; each figure can fail."""

from __future__ import annotations

import math

from bench.gpu_hold import measure_power, measure_temperature
from r3mes_desktop.core.clock import ManualClock


class SimGpu:
    """Power follows the duty at once (idle when paused); temperature follows the power
    with a first-order lag. Also the training worker's controls (duty, pause)."""

    def __init__(
        self,
        clock: ManualClock,
        *,
        idle_w: float = 60.0,
        full_w: float = 300.0,
        tau_s: float = 40.0,
    ) -> None:
        self.clock = clock
        self.idle_w, self.full_w, self.tau_s = idle_w, full_w, tau_s
        self.duty = 1.0
        self.paused = False
        self.at = clock.monotonic()
        self.temp = self._steady()

    def _steady(self) -> float:
        return 30.0 + 0.15 * self._power()

    def _power(self) -> float:
        return self.idle_w if self.paused else self.idle_w + (self.full_w - self.idle_w) * self.duty

    def _advance(self) -> None:
        now = self.clock.monotonic()
        self.temp += (self._steady() - self.temp) * (1 - math.exp(-(now - self.at) / self.tau_s))
        self.at = now

    # NVML's side
    def power_watts(self) -> dict[int, float]:
        self._advance()
        return {0: self._power()}

    def temperatures_c(self) -> dict[int, float]:
        self._advance()
        return {0: self.temp}

    # the worker's side
    @property
    def training(self) -> bool:
        return not self.paused

    def set_duty(self, fraction: float) -> None:
        self._advance()
        self.duty = fraction

    def pause(self) -> None:
        self._advance()
        self.paused = True

    def resume(self) -> None:
        self._advance()
        self.paused = False


async def test_the_throttle_holds_a_reachable_target_and_misses_one_below_the_floor() -> None:
    clock = ManualClock()
    gpu = SimGpu(clock)
    held = await measure_power(gpu, gpu, 210.0, settle_s=60, measure_s=60, clock=clock)
    assert held.samples == 120 and held.ok, held
    assert abs(held.ratio - 1) < 0.05
    assert gpu.duty == 1.0  # the throttle gives full duty back when it stops

    floor = await measure_power(
        SimGpu(clock), SimGpu(clock), 40.0, settle_s=60, measure_s=10, clock=clock
    )
    assert not floor.ok  # even the lowest duty draws more than 40 W


async def test_the_temperature_hold_keeps_within_two_degrees_or_says_it_missed() -> None:
    clock = ManualClock()
    gpu = SimGpu(clock)  # settles at 75 °C at full load
    held = await measure_temperature(gpu, gpu, 72.0, 1.0, measure_s=300, clock=clock)
    assert held.ok and held.samples > 500, held
    assert 70.0 <= held.lowest_c < 72.0 <= held.highest_c <= 74.0, held
    assert not gpu.paused  # released at the end

    wide = await measure_temperature(
        SimGpu(clock), SimGpu(clock), 72.0, 6.0, measure_s=300, clock=clock
    )
    assert not wide.ok and wide.lowest_c < 70.0  # a 6 °C hysteresis swings past ±2 °C
