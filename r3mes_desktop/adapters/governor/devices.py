"""Detect the devices this machine can mine on: the CPU, and every GPU torch and NVML see.

torch is asked in a child process (`python -m r3mes_desktop.adapters.governor.devices`):
importing it costs the desktop process seconds and hundreds of megabytes it never needs
otherwise (training runs in worker processes). NVML adds the driver version and fills in
GPUs when torch has no CUDA build. Every source that fails is left out with a note, never
an exception: a machine whose GPU cannot be read still mines on its CPU.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

from r3mes_desktop.core.devices import CPU, DeviceInfo

log = logging.getLogger(__name__)

_PROBE_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Detected:
    devices: tuple[DeviceInfo, ...]
    notes: tuple[str, ...] = field(default=())


def cpu_device() -> DeviceInfo:
    name = _cpu_model() or platform.processor() or platform.machine() or "CPU"
    memory_mb: int | None = None
    try:
        import psutil

        memory_mb = int(psutil.virtual_memory().total // 2**20)
    except Exception as exc:  # psutil missing or unreadable: memory shown as unknown
        log.debug("total memory: %s", exc)
    return DeviceInfo(id=CPU, name=name, memory_mb=memory_mb, cores=os.cpu_count())


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def torch_devices() -> list[dict[str, Any]]:
    """What torch sees (run in the probe process)."""
    import torch

    found: list[dict[str, Any]] = []
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            found.append(
                {
                    "id": f"cuda:{index}",
                    "name": str(props.name),
                    "memory_mb": int(props.total_memory // 2**20),
                }
            )
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append({"id": "mps", "name": "Apple GPU (Metal)"})
    return found


def probe_torch(timeout_s: float = _PROBE_TIMEOUT_S) -> tuple[list[DeviceInfo], str | None]:
    """torch's devices from a child process; ([], why) when that fails."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "r3mes_desktop.adapters.governor.devices"],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [], f"torch device probe failed: {exc}"
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return [], f"torch device probe exited {done.returncode}: {tail}"
    try:
        rows = json.loads(done.stdout)
        return [DeviceInfo(**row) for row in rows], None
    except (ValueError, TypeError) as exc:
        return [], f"torch device probe printed something unreadable: {exc}"


def nvml_devices() -> tuple[list[DeviceInfo], str | None]:
    """GPUs and the driver version from NVML; ([], why) without the package or a driver."""
    try:
        nvml = importlib.import_module("pynvml")
    except ImportError:
        return [], "nvidia-ml-py is not installed: no driver version or temperatures"
    try:
        nvml.nvmlInit()
    except Exception as exc:  # NVMLError: no driver, no GPU
        return [], f"NVML: {exc}"
    try:
        driver = nvml.nvmlSystemGetDriverVersion()
        driver = driver.decode() if isinstance(driver, bytes) else str(driver)
        found = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            name = nvml.nvmlDeviceGetName(handle)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            found.append(
                DeviceInfo(
                    id=f"cuda:{index}",
                    name=name.decode() if isinstance(name, bytes) else str(name),
                    memory_mb=int(memory.total // 2**20),
                    driver=driver,
                )
            )
        return found, None
    except Exception as exc:
        return [], f"NVML: {exc}"
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception as exc:
            log.debug("NVML shutdown: %s", exc)


def torch_has_cuda() -> bool:
    """Whether the installed torch is a CUDA build, without importing it (seconds): its
    CUDA library is there (libtorch_cuda.so, torch_cuda.dll)."""
    import importlib.util

    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return False
    for root in spec.submodule_search_locations:
        lib = os.path.join(root, "lib")
        if any(
            os.path.exists(os.path.join(lib, name))
            for name in ("libtorch_cuda.so", "torch_cuda.dll")
        ):
            return True
    return False


def auto_devices() -> list[str]:
    """The devices "auto" (no device ticked) mines on, found cheaply at every start: each
    GPU NVML or the NVIDIA driver (/proc/driver/nvidia/gpus) lists, when torch is a CUDA
    build; otherwise one worker that picks its device itself (`auto`: CUDA if torch has
    it, else the CPU), since asking torch costs seconds. A GPU a CPU-only torch cannot use
    must not take rounds it would fail."""
    if not torch_has_cuda():
        return ["auto"]
    from_nvml, _ = nvml_devices()
    if from_nvml:
        return [device.id for device in from_nvml]
    try:
        count = len(os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        count = 0
    if count:
        return [f"cuda:{index}" for index in range(count)]
    return ["auto"]


def detect(*, torch_probe: bool = True) -> Detected:
    """The CPU, then the GPUs: torch's list (what training can use) with NVML's driver
    version merged in; NVML's alone where torch sees none (a CPU-only torch build: listed,
    so the user sees the GPU, though training cannot use it until torch can)."""
    notes: list[str] = []
    from_torch: list[DeviceInfo] = []
    if torch_probe:
        from_torch, why = probe_torch()
        if why:
            notes.append(why)
    from_nvml, why = nvml_devices()
    if why and from_torch and any(d.index is not None for d in from_torch):
        notes.append(why)
    by_nvml = {device.id: device for device in from_nvml}
    gpus: list[DeviceInfo] = []
    for device in from_torch:
        extra = by_nvml.pop(device.id, None)
        gpus.append(
            device
            if extra is None
            else DeviceInfo(
                id=device.id,
                name=device.name,
                memory_mb=device.memory_mb or extra.memory_mb,
                driver=extra.driver,
            )
        )
    if by_nvml and torch_probe:
        notes.append(
            f"{', '.join(sorted(by_nvml))} found by NVML but not by torch "
            "(a CPU-only torch build?): listed, not usable for training"
        )
    gpus.extend(by_nvml.values())
    return Detected(devices=(cpu_device(), *gpus), notes=tuple(notes))


def main() -> None:
    print(json.dumps(torch_devices()))


if __name__ == "__main__":
    main()
