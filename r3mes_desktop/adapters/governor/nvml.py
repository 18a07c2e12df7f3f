"""GPU temperatures and power draw from NVML (nvidia-ml-py), when it is installed.

Without the package, the driver or a GPU the source reads Unknown with a Notice; the
temperature policy then lets mining run (`core.governor`)."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from r3mes_desktop.adapters.governor.degraded import Degraded
from r3mes_desktop.core.events import EventBus
from r3mes_desktop.core.governor import Unknown

log = logging.getLogger(__name__)


class NvmlGpus:
    def __init__(self, bus: EventBus | None = None) -> None:
        self._degraded = Degraded("GPU temperature", bus)
        self._nvml: ModuleType | None = None
        self._handles: list[Any] = []

    def _open(self) -> str | None:
        try:
            nvml = importlib.import_module("pynvml")
        except ImportError:
            return "nvidia-ml-py is not installed"
        try:
            nvml.nvmlInit()
            handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
        except Exception as exc:  # NVMLError: no driver, no GPU
            return f"NVML: {exc}"
        self._nvml, self._handles = nvml, handles
        return None

    def temperatures_c(self) -> Mapping[int, float] | Unknown:
        if self._nvml is None:
            why = self._open()
            if why is not None:
                return self._degraded.unknown(why)
        nvml = self._nvml
        assert nvml is not None
        try:
            temps = {
                i: float(nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU))
                for i, h in enumerate(self._handles)
            }
        except Exception as exc:
            return self._degraded.unknown(f"NVML: {exc}")
        self._degraded.ok()
        return temps

    def power_watts(self) -> Mapping[int, float] | Unknown:
        """Each GPU's power draw (the throttle that uses it is not done yet)."""
        if self._nvml is None and self._open() is not None:
            return Unknown("NVML is not available")
        nvml = self._nvml
        assert nvml is not None
        try:
            return {
                i: nvml.nvmlDeviceGetPowerUsage(h) / 1000.0 for i, h in enumerate(self._handles)
            }
        except Exception as exc:
            return Unknown(f"NVML: {exc}")

    def close(self) -> None:
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception as exc:  # a driver that went away: nothing left to release
                log.debug("NVML shutdown: %s", exc)
            self._nvml = None
            self._handles = []
