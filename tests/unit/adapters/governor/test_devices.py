"""Device detection: the CPU always, GPUs from torch (in a child process) and NVML, each
source that fails left out with a note; "auto" found cheaply; the settings' choice checked
against what is there."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from typing import Any

import pytest

from r3mes_desktop.adapters.governor import devices
from r3mes_desktop.core.devices import CPU, DeviceInfo, mining_devices
from r3mes_desktop.core.errors import ValidationError


def _nvml(count: int = 2, *, fail: bool = False) -> types.ModuleType:
    mod = types.ModuleType("pynvml")
    calls: list[str] = []

    def init() -> None:
        if fail:
            raise RuntimeError("Driver Not Loaded")
        calls.append("init")

    mod.nvmlInit = init  # type: ignore[attr-defined]
    mod.nvmlShutdown = lambda: calls.append("shutdown")  # type: ignore[attr-defined]
    mod.nvmlSystemGetDriverVersion = lambda: b"580.159.04"  # type: ignore[attr-defined]
    mod.nvmlDeviceGetCount = lambda: count  # type: ignore[attr-defined]
    mod.nvmlDeviceGetHandleByIndex = lambda i: i  # type: ignore[attr-defined]
    mod.nvmlDeviceGetName = lambda i: f"NVIDIA Test {i}"  # type: ignore[attr-defined]
    mod.nvmlDeviceGetMemoryInfo = lambda _i: types.SimpleNamespace(total=24 * 2**30)  # type: ignore[attr-defined]
    mod.calls = calls  # type: ignore[attr-defined]
    return mod


def test_the_cpu_is_always_there_with_its_cores_and_memory() -> None:
    cpu = devices.cpu_device()
    assert cpu.id == CPU and not cpu.is_gpu and cpu.cores and cpu.memory_mb
    assert cpu.describe().startswith("cpu · ") and f"{cpu.cores} cores" in cpu.describe()


def test_nvml_lists_gpus_with_the_driver_and_is_shut_down(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _nvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    found, why = devices.nvml_devices()
    assert why is None and [d.id for d in found] == ["cuda:0", "cuda:1"]
    assert found[1] == DeviceInfo("cuda:1", "NVIDIA Test 1", memory_mb=24576, driver="580.159.04")
    assert found[1].describe() == "cuda:1 · NVIDIA Test 1 · 24 GB · driver 580.159.04"
    assert fake.calls == ["init", "shutdown"]  # type: ignore[attr-defined]
    monkeypatch.setattr(devices, "torch_has_cuda", lambda: True)
    assert devices.auto_devices() == ["cuda:0", "cuda:1"]
    monkeypatch.setattr(devices, "torch_has_cuda", lambda: False)
    assert devices.auto_devices() == ["auto"]  # a CPU-only torch cannot train on them


def test_without_nvml_or_a_driver_auto_is_one_self_choosing_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    monkeypatch.setattr(devices, "torch_has_cuda", lambda: True)
    assert devices.nvml_devices() == (
        [],
        "nvidia-ml-py is not installed: no driver version or temperatures",
    )
    monkeypatch.setattr(devices.os, "listdir", lambda _path: (_ for _ in ()).throw(OSError()))
    assert devices.auto_devices() == ["auto"]
    monkeypatch.setattr(devices.os, "listdir", lambda _path: ["0000:01:00.0", "0000:02:00.0"])
    assert devices.auto_devices() == ["cuda:0", "cuda:1"]  # the driver's list, no NVML
    monkeypatch.setitem(sys.modules, "pynvml", _nvml(fail=True))
    assert devices.nvml_devices() == ([], "NVML: Driver Not Loaded")


def test_detect_merges_torch_and_nvml_and_notes_what_failed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", _nvml(count=2))
    torch_saw = [DeviceInfo("cuda:0", "NVIDIA Test 0", memory_mb=24000)]
    monkeypatch.setattr(devices, "probe_torch", lambda: (torch_saw, None))
    found = devices.detect()
    assert [d.id for d in found.devices] == ["cpu", "cuda:0", "cuda:1"]
    assert found.devices[1].driver == "580.159.04" and found.devices[1].memory_mb == 24000
    assert found.notes == (
        "cuda:1 found by NVML but not by torch (a CPU-only torch build?): listed, not usable "
        "for training",
    )
    monkeypatch.setattr(devices, "probe_torch", lambda: ([], "torch device probe exited 1: boom"))
    monkeypatch.setitem(sys.modules, "pynvml", None)
    found = devices.detect()
    assert [d.id for d in found.devices] == ["cpu"]
    assert found.notes == ("torch device probe exited 1: boom",)


def test_the_torch_probe_runs_in_a_child_and_reads_its_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rows = [{"id": "cuda:0", "name": "NVIDIA Test", "memory_mb": 81920}]

    def run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        assert args[1:] == ["-m", "r3mes_desktop.adapters.governor.devices"]
        assert kwargs["timeout"] > 0
        return subprocess.CompletedProcess(args, 0, json.dumps(rows), "")

    monkeypatch.setattr(devices.subprocess, "run", run)
    assert devices.probe_torch() == ([DeviceInfo("cuda:0", "NVIDIA Test", memory_mb=81920)], None)

    def broken(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(args, 1, "", "Traceback\nImportError: no torch")

    monkeypatch.setattr(devices.subprocess, "run", broken)
    assert devices.probe_torch() == ([], "torch device probe exited 1: ImportError: no torch")


def test_the_real_probe_on_this_machine() -> None:
    """The child process really runs, and agrees with the cheap look at torch's files."""
    found, why = devices.probe_torch()
    assert why is None
    assert all(d.id.startswith(("cuda:", "mps")) for d in found)
    if any(d.id.startswith("cuda:") for d in found):
        assert devices.torch_has_cuda()


def test_the_choice_is_checked_against_what_is_there() -> None:
    here = [DeviceInfo(CPU, "CPU"), DeviceInfo("cuda:1", "G1"), DeviceInfo("cuda:0", "G0")]
    assert mining_devices((), here) == ["cuda:0", "cuda:1"]
    assert mining_devices((), [DeviceInfo(CPU, "CPU")]) == [CPU]
    assert mining_devices(("cuda:1",), here) == ["cuda:1"]
    with pytest.raises(ValidationError, match=r"names cuda:3, not found .*found: cpu, cuda:0"):
        mining_devices(("cuda:3",), here)
