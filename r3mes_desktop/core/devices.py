"""The compute devices this machine has, and which of them mine.

Devices are detected, not typed: the adapters (`adapters.governor.devices`) ask torch and
NVML what is there, and the settings keep only the ids the user ticked (`mining_devices`).
An empty choice means "every GPU found, else the CPU", so a fresh install on a gaming PC
uses its GPU and a laptop without one uses its CPU, with nothing to configure.

The CPU mines alone or not at all: its cores also run proof of work and the app, so a rig
that trains on GPUs leaves the CPU to those.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from r3mes_desktop.core.errors import ValidationError

CPU = "cpu"


@dataclass(frozen=True)
class DeviceInfo:
    """One device as detected: `id` is what the settings and the training worker take
    (`cpu`, `cuda:0`, `mps`)."""

    id: str
    name: str
    memory_mb: int | None = None  # total memory (RAM for the CPU), None if unknown
    driver: str | None = None  # the GPU driver's version, None if unknown
    cores: int | None = None  # CPU cores (logical), None for GPUs

    @property
    def is_gpu(self) -> bool:
        return self.id != CPU

    @property
    def index(self) -> int | None:
        """The CUDA ordinal (`cuda:1` → 1); None for the CPU and mps."""
        kind, _, number = self.id.partition(":")
        return int(number) if kind == "cuda" and number.isdigit() else None

    def describe(self) -> str:
        """One line for the device list: "cuda:0 · NVIDIA H200 · 143 GB · driver 580.1"."""
        parts = [self.id, self.name]
        if self.memory_mb:
            parts.append(
                f"{self.memory_mb / 1024:.0f} GB"
                if self.memory_mb >= 1024
                else f"{self.memory_mb} MB"
            )
        if self.cores:
            parts.append(f"{self.cores} cores")
        if self.driver:
            parts.append(f"driver {self.driver}")
        return " · ".join(parts)


def mining_devices(chosen: Sequence[str], detected: Iterable[DeviceInfo]) -> list[str]:
    """The device ids that mine: the chosen ones (each must be present), or, when none is
    chosen, every GPU found, else the CPU."""
    found = {device.id: device for device in detected}
    if not chosen:
        gpus = sorted(
            (d for d in found.values() if d.index is not None), key=lambda d: d.index or 0
        )
        return [d.id for d in gpus] or [CPU]
    missing = [device for device in chosen if device != CPU and device not in found]
    if missing:
        present = ", ".join(sorted(found)) or "none"
        raise ValidationError(
            f"mining_devices names {', '.join(missing)}, not found on this machine "
            f"(found: {present})"
        )
    return list(chosen)
