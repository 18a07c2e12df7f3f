"""The power controller converges on a simulated GPU and never leaves its duty bounds."""

from __future__ import annotations

import random

import pytest

from r3mes_desktop.adapters.mining.throttle import MIN_DUTY, PowerController
from r3mes_desktop.core.errors import ValidationError


class SimGpu:
    """Power = idle + (full − idle) × duty, through a first-order lag (the board's power
    smoothing and the pulses of a duty cycle), with reading noise."""

    def __init__(self, idle_w: float, full_w: float, *, lag_s: float = 1.0, noise_w: float = 0.0):
        self.idle_w, self.full_w, self.lag_s, self.noise_w = idle_w, full_w, lag_s, noise_w
        self.duty = 1.0
        self.power = full_w
        self.rng = random.Random(7)

    def advance(self, dt: float) -> float:
        steady = self.idle_w + (self.full_w - self.idle_w) * self.duty
        self.power += (steady - self.power) * min(1.0, dt / self.lag_s)
        return self.power + self.rng.uniform(-self.noise_w, self.noise_w)


def run(controller: PowerController, gpus: dict[str, SimGpu], seconds: float, dt: float = 0.5):
    """Drive the loop as app.throttling does; returns each GPU's mean power over the last
    period and the duty history."""
    now = 0.0
    history: dict[str, list[float]] = {d: [] for d in gpus}
    tail: dict[str, list[float]] = {d: [] for d in gpus}
    while now < seconds:
        now += dt
        readings = {device: gpu.advance(dt) for device, gpu in gpus.items()}
        for device, value in readings.items():
            tail[device] = [*tail[device][-int(controller.period_s / dt) + 1 :], value]
        for device, duty in controller.update(readings, now).items():
            gpus[device].duty = duty
            history[device].append(duty)
    means = {d: sum(v) / len(v) for d, v in tail.items()}
    return means, history


def test_converges_to_the_target_on_two_different_gpus() -> None:
    controller = PowerController(250.0)
    gpus = {
        "cuda:0": SimGpu(60, 450, noise_w=10),
        "cuda:1": SimGpu(90, 320, noise_w=10),
    }
    means, history = run(controller, gpus, 120)
    for device, mean in means.items():
        assert mean == pytest.approx(250, rel=0.05), (device, mean, history[device])
    # no overshoot below the target's duty: the duty only falls toward its fixed point
    for device, gpu in gpus.items():
        fixed = (250 - gpu.idle_w) / (gpu.full_w - gpu.idle_w)
        assert min(history[device]) >= fixed * 0.9
    assert not controller.unreachable


def test_follows_a_new_target_both_ways() -> None:
    controller = PowerController(300.0)
    gpus = {"cuda:0": SimGpu(60, 450, noise_w=5)}
    run(controller, gpus, 60)
    controller.set_target(150.0)
    means, _ = run(controller, gpus, 90)
    assert means["cuda:0"] == pytest.approx(150, rel=0.05)
    controller.set_target(440.0)
    means, _ = run(controller, gpus, 90)
    assert means["cuda:0"] == pytest.approx(440, rel=0.05)


def test_a_target_under_the_idle_draw_bottoms_out_and_is_reported() -> None:
    controller = PowerController(50.0)
    gpus = {"cuda:0": SimGpu(60, 450)}
    _, history = run(controller, gpus, 120)
    assert history["cuda:0"][-1] == MIN_DUTY
    assert min(history["cuda:0"]) >= MIN_DUTY
    assert controller.unreachable == {"cuda:0"}


def test_a_gpu_under_the_target_runs_at_full_duty_and_within_the_deadband_nothing_moves() -> None:
    controller = PowerController(500.0)
    gpus = {"cuda:0": SimGpu(60, 450)}
    _, history = run(controller, gpus, 30)
    assert history["cuda:0"] == []  # already at 1.0 and under the target: no change
    assert controller.duties == {"cuda:0": 1.0}
    steady = PowerController(300.0)
    changed = steady.update({"cuda:0": 305.0}, 0.0) | steady.update({"cuda:0": 305.0}, 5.0)
    assert changed == {}


def test_readings_average_over_a_period_and_forget_starts_over() -> None:
    controller = PowerController(200.0, period_s=3.0)
    assert controller.update({"cuda:0": 400.0}, 0.0) == {}
    assert controller.update({"cuda:0": 0.0}, 1.5) == {}  # a sleeping pulse
    changed = controller.update({"cuda:0": 200.0}, 3.0)  # mean 200 W: on target
    assert changed == {}
    controller.update({"cuda:0": 400.0}, 4.0)
    controller.forget("cuda:0")  # paused: the 400 W sample is dropped
    assert controller.update({"cuda:0": 200.0}, 5.0) == {}
    assert controller.update({"cuda:0": 200.0}, 8.0) == {}


def test_bad_parameters_are_refused() -> None:
    for bad in (0, -5, 2000, True):
        with pytest.raises(ValidationError, match="gpu_power_target_w"):
            PowerController(bad)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        PowerController(100, gain=1.5)
