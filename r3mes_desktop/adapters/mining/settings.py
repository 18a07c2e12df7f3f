"""The miner's local knobs for the workload (torch-free), validated with clear errors.

Round-level choices that change the bytes (model size, steps) come from the round; these
only decide *how* this machine runs it (device, threads, checkpoints, watchdog, limits).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from r3mes_desktop.adapters.mining.presets import PRESETS
from r3mes_desktop.core.errors import ValidationError

_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
PRIORITIES = ("normal", "low", "idle")


@dataclass(frozen=True)
class MiningConfig:
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"
    preset: str = "default"  # used when the round does not name one
    num_threads: int = 0  # torch CPU threads; 0 = all cores but one (at least one)
    checkpoint_interval: int = 10  # steps between checkpoints
    keep_checkpoints: int = 3
    max_gradient_size_mb: float = 100.0  # R3MES_MAX_GRADIENT_SIZE_MB
    memory_budget_mb: float = 0.0  # 0 = no budget; else micro-batches above it count as OOM
    min_free_disk_mb: float = 64.0  # below this, checkpoints pause mining instead of writing
    heartbeat_interval_s: float = 0.5
    watchdog_timeout_s: float = 15.0
    max_restarts: int = 3  # worker restarts per round before giving up
    pow_processes: int = 0  # 0 = all cores
    priority: str = "normal"  # the worker processes' CPU priority: normal | low | idle
    vram_cap_mb: float = 0.0  # 0 = no cap; else this process's share of a CUDA device

    def __post_init__(self) -> None:
        if not isinstance(self.device, str) or not _DEVICE_RE.match(self.device):
            raise ValidationError(
                f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}"
            )
        if self.priority not in PRIORITIES:
            raise ValidationError(
                f"priority must be one of {list(PRIORITIES)}, got {self.priority!r}"
            )
        if self.preset not in PRESETS:
            raise ValidationError(f"preset must be one of {sorted(PRESETS)}, got {self.preset!r}")
        ranges: dict[str, tuple[float, float]] = {
            "num_threads": (0, 1024),
            "checkpoint_interval": (1, 1_000_000),
            "keep_checkpoints": (1, 1000),
            "max_gradient_size_mb": (0.001, 100_000),
            "memory_budget_mb": (0, 10_000_000),
            "min_free_disk_mb": (0, 10_000_000),
            "heartbeat_interval_s": (0.01, 60),
            "watchdog_timeout_s": (0.1, 3600),
            "max_restarts": (0, 100),
            "pow_processes": (0, 1024),
            "vram_cap_mb": (0, 10_000_000),
        }
        for name, (lo, hi) in ranges.items():
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not lo <= value <= hi
            ):
                raise ValidationError(f"{name} must be in {lo:g}..{hi:g}, got {value!r}")
        if self.watchdog_timeout_s <= 2 * self.heartbeat_interval_s:
            raise ValidationError(
                "watchdog_timeout_s must exceed twice heartbeat_interval_s "
                f"({self.watchdog_timeout_s} <= 2 × {self.heartbeat_interval_s})"
            )

    @classmethod
    def from_settings(cls, settings: Any) -> MiningConfig:
        """Pick the fields an app settings object has (same names, optionally `mining_`-
        prefixed); anything missing keeps its default."""
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            for attr in (f.name, f"mining_{f.name}"):
                if hasattr(settings, attr):
                    values[f.name] = getattr(settings, attr)
                    break
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def training_threads(threads: int, cpu_count: int | None = None) -> int:
    """The torch threads a CPU training worker uses: `threads`, or for 0 all cores but one
    (kept for the app and the event loop), at least one."""
    if threads > 0:
        return threads
    return max(1, (cpu_count if cpu_count is not None else os.cpu_count() or 2) - 1)


def pow_processes(
    pow_threads: int,
    *,
    devices: Sequence[str],
    training_threads_setting: int = 0,
    cpu_count: int | None = None,
) -> int:
    """How many proof-of-work processes to run: `pow_threads`, or for 0 the cores that
    training leaves free. A CPU rig trains and proves in one serial lane (a round's proof
    of work runs after its training, before the next round trains), so nothing trains
    while it proves: it takes every core (at the workers' lower priority the app stays
    responsive), or as many as a training thread cap allows the miner; a GPU rig's proof of
    work runs beside the other GPUs' training and takes all cores minus one per GPU worker
    (each feeds its device from one busy core); at least one."""
    if pow_threads > 0:
        return pow_threads
    cores = cpu_count if cpu_count is not None else os.cpu_count() or 1
    if not devices or any(device in ("cpu", "auto") for device in devices):
        return training_threads_setting if training_threads_setting > 0 else cores
    return max(1, cores - len(devices))


def vram_fraction(cap_mb: float, total_bytes: int) -> float:
    """The share of a device's memory that `cap_mb` is, for
    `torch.cuda.set_per_process_memory_fraction` (0 < fraction ≤ 1; a cap at or over the
    device's memory is no cap)."""
    if total_bytes <= 0:
        raise ValidationError(f"device memory must be positive, got {total_bytes} bytes")
    if cap_mb <= 0:
        return 1.0
    return min(1.0, cap_mb * 2**20 / total_bytes)
