"""On an NVIDIA GPU: how close the power throttle holds its target, and the temperature hold.

    python -m bench.gpu_hold [--device cuda:0] [--settle 30] [--measure 60]

A real training worker (`ProcessTrainer`, the large preset, one long round) keeps GPU 0
busy while three phases are read from NVML every half second:

1. full power: the draw at duty 1, and the temperature it settles at;
2. power target at 70% of that draw: the app's own throttle loop (`app.throttling.
   PowerThrottle` over `adapters.mining.throttle.PowerController`) moves the worker's duty;
   after `--settle` seconds the mean draw over `--measure` seconds against the target
   (target: within 5%);
3. temperature limit 3 °C under the full-load temperature, resume 1 °C below it: the
   governor's own policy (`core.governor.GpuTemperature`, per GPU) holds the worker back and
   lets it go; every reading from the first release of a hold on against the limit
   (target: within ±2 °C).

Without CUDA or NVML it prints why and exits 0: a skipped measurement, never a pass. The
measuring loops take their clock and sources as arguments, so a simulated GPU exercises
them in the unit tests (`tests/unit/app/test_gpu_hold_bench.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from r3mes_desktop.adapters.mining.throttle import PowerController
from r3mes_desktop.app.throttling import DutyControlled, GpuPowerSource, PowerThrottle
from r3mes_desktop.core.clock import SYSTEM_CLOCK, Clock
from r3mes_desktop.core.governor import (
    Governor,
    GpuTemperature,
    GpuTemperatureSource,
    Sources,
    Unknown,
)

SAMPLE_S = 0.5


class Holdable(Protocol):
    def pause(self) -> None: ...

    def resume(self) -> None: ...


@dataclass(frozen=True)
class PowerFigures:
    target_w: float
    mean_w: float
    stdev_w: float
    samples: int

    @property
    def ratio(self) -> float:
        return self.mean_w / self.target_w

    @property
    def ok(self) -> bool:
        return self.samples > 0 and abs(self.ratio - 1) <= 0.05


@dataclass(frozen=True)
class TemperatureFigures:
    limit_c: float
    lowest_c: float
    highest_c: float
    samples: int  # readings once the first hold was released (the hold's steady state)
    within: int  # of those, how many were within ±2 °C of the limit

    @property
    def ok(self) -> bool:
        return self.samples > 0 and self.within == self.samples


def _reading(value: Mapping[int, float] | Unknown, index: int) -> float:
    if isinstance(value, Unknown) or index not in value:
        why = value.why if isinstance(value, Unknown) else f"no GPU {index}"
        raise RuntimeError(f"NVML reading failed: {why}")
    return float(value[index])


async def measure_power(
    member: DutyControlled,
    source: GpuPowerSource,
    target_w: float,
    *,
    settle_s: float,
    measure_s: float,
    clock: Clock = SYSTEM_CLOCK,
    sample_s: float = SAMPLE_S,
    index: int = 0,
) -> PowerFigures:
    """Run the app's throttle over `member` toward `target_w`; read the draw after
    `settle_s` for `measure_s`. The throttle steps on this loop's clock, so a simulated
    GPU on a manual clock runs it in no time."""
    throttle = PowerThrottle(
        PowerController(target_w), {f"cuda:{index}": member}, source, clock=clock
    )
    samples: list[float] = []
    started = clock.monotonic()
    try:
        while clock.monotonic() - started < settle_s + measure_s:
            await throttle.tick()
            if clock.monotonic() - started >= settle_s:
                samples.append(_reading(source.power_watts(), index))
            await clock.sleep(sample_s)
    finally:
        await throttle.stop()
    return PowerFigures(
        target_w=target_w,
        mean_w=statistics.fmean(samples) if samples else 0.0,
        stdev_w=statistics.pstdev(samples) if len(samples) > 1 else 0.0,
        samples=len(samples),
    )


async def measure_temperature(
    worker: Holdable,
    source: GpuTemperatureSource,
    limit_c: float,
    delta_c: float,
    *,
    measure_s: float,
    clock: Clock = SYSTEM_CLOCK,
    sample_s: float = SAMPLE_S,
    index: int = 0,
) -> TemperatureFigures:
    """Hold `worker` back as the governor's temperature policy says for GPU `index`, for
    `measure_s` seconds; count the readings from the first release of a hold on (before
    it, the GPU is still coming down from wherever it started)."""
    governor = Governor([GpuTemperature(limit_c, delta_c)], Sources(gpu=source), clock=clock)
    held = False
    settled = False
    after: list[float] = []
    started = clock.monotonic()
    try:
        while clock.monotonic() - started < measure_s:
            decision = governor.evaluate()
            hold = any(device == f"cuda:{index}" for device, _ in decision.devices_held)
            if hold and not held:
                worker.pause()
            elif held and not hold:
                worker.resume()
                settled = True
            held = hold
            temp = _reading(source.temperatures_c(), index)
            if settled:
                after.append(temp)
            await clock.sleep(sample_s)
    finally:
        if held:
            worker.resume()
    return TemperatureFigures(
        limit_c=limit_c,
        lowest_c=min(after, default=0.0),
        highest_c=max(after, default=0.0),
        samples=len(after),
        within=sum(1 for t in after if abs(t - limit_c) <= 2.0),
    )


def print_power(figures: PowerFigures, full_w: float) -> None:
    print(
        f"power target {figures.target_w:.1f} W (70% of {full_w:.1f} W at full duty): mean "
        f"{figures.mean_w:.1f} W ± {figures.stdev_w:.1f} over {figures.samples} readings, "
        f"ratio {figures.ratio:.3f} (target within 5%): {'ok' if figures.ok else 'MISSED'}"
    )


def print_temperature(figures: TemperatureFigures) -> None:
    print(
        f"temperature limit {figures.limit_c:.0f} °C: once held, {figures.lowest_c:.0f}"
        f"–{figures.highest_c:.0f} °C, {figures.within} of {figures.samples} readings within "
        f"±2 °C (target: all): {'ok' if figures.ok else 'MISSED'}"
    )


# -- on a real GPU ----------------------------------------------------------------------------
def _skip_reason(device: str) -> str | None:
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "no CUDA device (torch.cuda.is_available() is False)"
    try:
        import pynvml
    except ImportError:
        return "nvidia-ml-py is not installed (pip install .[gpu])"
    try:
        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
    except Exception as exc:
        return f"NVML cannot start: {exc}"
    if not device.startswith("cuda"):
        return f"device {device} is not a CUDA device"
    return None


async def _on_gpu(device: str, settle_s: float, measure_s: float) -> int:
    from r3mes_desktop.adapters.governor.nvml import NvmlGpus
    from r3mes_desktop.adapters.mining.settings import MiningConfig
    from r3mes_desktop.adapters.mining.worker import ProcessTrainer
    from r3mes_desktop.core.steps import RoundSpec

    index = int(device.partition(":")[2] or 0)
    nvml = NvmlGpus()
    idle_w = _reading(nvml.power_watts(), index)
    with tempfile.TemporaryDirectory(prefix="r3mes-gpu-hold-") as tmp:
        trainer = ProcessTrainer(
            MiningConfig(device=device, preset="large", checkpoint_interval=10**6),
            checkpoint_root=Path(tmp) / "ckpt",
        )
        spec = RoundSpec(
            round_id=1,
            seed=7,
            difficulty=16,
            base_model_id="bench",
            steps=10**7,
            hyperparams={"preset": "large"},
        )
        training = asyncio.ensure_future(
            trainer.train(transaction_id="gpu-hold", spec=spec, progress=lambda _f, _d: None)
        )
        try:
            await _until(lambda: trainer.training, 120)
            await asyncio.sleep(settle_s)
            full = [_reading(nvml.power_watts(), index) for _ in range(10)]
            full_w = statistics.fmean(full)
            print(f"{device}: idle {idle_w:.1f} W, full duty {full_w:.1f} W")
            power = await measure_power(
                trainer, nvml, 0.7 * full_w, settle_s=settle_s, measure_s=measure_s, index=index
            )
            print_power(power, full_w)
            await asyncio.sleep(settle_s)  # back at full duty: the temperature it settles at
            hot = _reading(nvml.temperatures_c(), index)
            temperature = await measure_temperature(
                trainer, nvml, hot - 3.0, 1.0, measure_s=2 * measure_s, index=index
            )
            print_temperature(temperature)
        finally:
            trainer.stop()
            training.cancel()
            await asyncio.gather(training, return_exceptions=True)
            await trainer.shutdown()
            nvml.close()
    return 0 if power.ok and temperature.ok else 1


async def _until(condition: Callable[[], bool], timeout_s: float) -> None:
    for _ in range(int(timeout_s / 0.1)):
        if condition():
            return
        await asyncio.sleep(0.1)
    raise TimeoutError("the training worker did not start training in time")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_hold", description=__doc__)
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--settle", type=float, default=30.0, help="seconds before reading")
    parser.add_argument("--measure", type=float, default=60.0, help="seconds of readings")
    args: Any = parser.parse_args(argv)
    why = _skip_reason(args.device)
    if why is not None:
        print(f"skipped: {why}; the power and temperature holds are measured on NVIDIA GPUs")
        return 0
    return asyncio.run(_on_gpu(args.device, args.settle, args.measure))


if __name__ == "__main__":
    sys.exit(main())
