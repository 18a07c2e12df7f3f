"""The governor's real sources: each reads a value where the system has one, and Unknown
with one Notice (not one per reading) where it has not; none raises."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import subprocess
import sys
import time
import types
from collections.abc import Iterator
from typing import Any

import pytest

from r3mes_desktop.adapters.governor import nvml, system
from r3mes_desktop.adapters.governor.nvml import NvmlGpus
from r3mes_desktop.adapters.governor.system import PsutilCpuLoad, PsutilPower, PsutilProcesses
from r3mes_desktop.adapters.governor.x11 import X11Idle
from r3mes_desktop.core.events import EventBus, Notice
from r3mes_desktop.core.governor import NO_BATTERY, Battery, Unknown
from tests.helpers.fakes import recorded


def test_process_names_include_this_one() -> None:
    names = PsutilProcesses().process_names()
    assert not isinstance(names, Unknown)
    assert any(name.startswith("python") or name == "pytest" for name in names)


def test_cpu_load_of_others_is_a_percentage() -> None:
    source = PsutilCpuLoad()
    time.sleep(0.1)
    load = source.other_cpu_percent()
    assert isinstance(load, float)
    assert 0.0 <= load <= 100.0


class _FakeProc:
    def __init__(self, pid: int, percent: float, children: list[_FakeProc] | None = None) -> None:
        self.pid = pid
        self.percent = percent
        self._children = children or []

    def cpu_percent(self, interval: float | None = None) -> float:
        return self.percent

    def children(self, recursive: bool = False) -> list[_FakeProc]:
        return self._children


def test_cpu_load_leaves_out_the_miners_own_process_tree(monkeypatch: pytest.MonkeyPatch) -> None:
    """The miner and its workers use 100 % + 60 % of one core of 4 (40 % of the machine);
    the machine is at 70 %: other programs use 30 %."""
    worker = _FakeProc(2, 60.0)
    fake = types.SimpleNamespace(
        cpu_count=lambda: 4,
        cpu_percent=lambda interval=None: 70.0,
        Process=lambda pid: _FakeProc(pid, 100.0, [worker]),
        NoSuchProcess=LookupError,
        AccessDenied=PermissionError,
    )
    monkeypatch.setattr(system, "psutil", fake)
    assert PsutilCpuLoad(pid=1).other_cpu_percent() == pytest.approx(30.0)
    fake.cpu_percent = lambda interval=None: 20.0
    assert PsutilCpuLoad(pid=1).other_cpu_percent() == 0.0  # never negative


class _FakeBattery:
    def __init__(self, state: Any) -> None:
        self.state = state

    def sensors_battery(self) -> Any:
        if isinstance(self.state, Exception):
            raise self.state
        return self.state


def test_battery_states(monkeypatch: pytest.MonkeyPatch) -> None:
    bus = EventBus()
    notices = recorded(bus, Notice)
    fake = _FakeBattery(None)
    monkeypatch.setattr(system, "psutil", fake)
    power = PsutilPower(bus)
    assert power.battery() == NO_BATTERY
    fake.state = types.SimpleNamespace(percent=41.6, power_plugged=False)
    assert power.battery() == Battery(on_battery=True, percent=41.6)
    fake.state = types.SimpleNamespace(percent=41.6, power_plugged=None)
    assert power.battery() == Battery(on_battery=False, percent=41.6)
    fake.state = OSError("ACPI read failed")
    assert power.battery() == Unknown("ACPI read failed")
    assert power.battery() == Unknown("ACPI read failed")
    assert [n.message for n in notices] == [
        "battery cannot be read (ACPI read failed): the governor treats it as unknown"
    ]
    fake.state = None
    assert power.battery() == NO_BATTERY
    fake.state = OSError("again")
    power.battery()
    assert len(notices) == 2  # failed again after recovering: said again


def test_sources_without_psutil_read_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(system, "psutil", None)
    assert PsutilPower().battery() == Unknown("psutil is not installed")
    assert PsutilCpuLoad().other_cpu_percent() == Unknown("psutil is not installed")
    assert PsutilProcesses().process_names() == Unknown("psutil is not installed")


def test_nvml_without_the_package_reads_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    bus = EventBus()
    notices = recorded(bus, Notice)
    gpus = NvmlGpus(bus)
    assert gpus.temperatures_c() == Unknown("nvidia-ml-py is not installed")
    assert len(notices) == 1


def _fake_nvml(*, fail_init: bool = False) -> types.ModuleType:
    mod = types.ModuleType("pynvml")

    def init() -> None:
        if fail_init:
            raise RuntimeError("Driver Not Loaded")

    mod.nvmlInit = init  # type: ignore[attr-defined]
    mod.nvmlShutdown = lambda: None  # type: ignore[attr-defined]
    mod.nvmlDeviceGetCount = lambda: 2  # type: ignore[attr-defined]
    mod.nvmlDeviceGetHandleByIndex = lambda i: f"h{i}"  # type: ignore[attr-defined]
    mod.NVML_TEMPERATURE_GPU = 0  # type: ignore[attr-defined]
    temps = {"h0": 61, "h1": 84}
    mod.nvmlDeviceGetTemperature = lambda h, _kind: temps[h]  # type: ignore[attr-defined]
    mod.nvmlDeviceGetPowerUsage = lambda h: 150_500 if h == "h0" else 250_000  # type: ignore[attr-defined]
    return mod


def test_nvml_reads_each_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml())
    gpus = NvmlGpus()
    assert gpus.temperatures_c() == {0: 61.0, 1: 84.0}
    assert gpus.power_watts() == {0: 150.5, 1: 250.0}
    gpus.close()


def test_nvml_without_a_driver_reads_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml(fail_init=True))
    assert NvmlGpus().temperatures_c() == Unknown("NVML: Driver Not Loaded")
    assert nvml.NvmlGpus().power_watts() == Unknown("NVML is not available")


def test_x11_without_a_display_reads_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    bus = EventBus()
    notices = recorded(bus, Notice)
    idle = X11Idle(bus)
    assert idle.idle_seconds() == Unknown("no X display (DISPLAY is not set)")
    assert idle.idle_seconds() == Unknown("no X display (DISPLAY is not set)")
    assert len(notices) == 1
    assert X11Idle(display=":4242").idle_seconds() == Unknown("cannot open X display :4242")


@pytest.fixture
def xvfb() -> Iterator[str]:
    """A private Xvfb display (the same server `xvfb-run` starts)."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed")
    if ctypes.util.find_library("X11") is None or ctypes.util.find_library("Xss") is None:
        pytest.skip("libX11 or libXss is not installed")
    read, write = os.pipe()
    proc = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write), "-nolisten", "tcp", "-screen", "0", "640x480x24"],
        pass_fds=(write,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write)
    try:
        with os.fdopen(read) as pipe:
            number = pipe.readline().strip()
        if not number:
            pytest.skip("Xvfb did not start")
        yield f":{number}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _fake_input(display_name: str) -> bool:
    """Move the pointer through XTest (user input as the server sees it); False if the
    library is missing."""
    path = ctypes.util.find_library("Xtst")
    if path is None:
        return False
    xlib = ctypes.CDLL(ctypes.util.find_library("X11"))
    xtst = ctypes.CDLL(path)
    xlib.XOpenDisplay.restype = ctypes.c_void_p
    xlib.XOpenDisplay.argtypes = [ctypes.c_char_p]
    xlib.XFlush.argtypes = [ctypes.c_void_p]
    xlib.XCloseDisplay.argtypes = [ctypes.c_void_p]
    xtst.XTestFakeMotionEvent.argtypes = [
        ctypes.c_void_p,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_ulong,
    ]
    display = xlib.XOpenDisplay(display_name.encode())
    xtst.XTestFakeMotionEvent(display, -1, 10, 20, 0)
    xlib.XFlush(display)
    xlib.XCloseDisplay(display)
    return True


def test_x11_idle_time_under_xvfb(xvfb: str) -> None:
    idle = X11Idle(display=xvfb)
    try:
        first = idle.idle_seconds()
        assert isinstance(first, float), first
        time.sleep(0.6)
        second = idle.idle_seconds()
        assert isinstance(second, float)
        assert second >= first + 0.5
        if not _fake_input(xvfb):
            pytest.skip("libXtst is not installed: input not simulated")
        time.sleep(0.05)
        after = idle.idle_seconds()
        assert isinstance(after, float)
        assert after < 0.5 < second
    finally:
        idle.close()


def test_nvml_on_a_real_gpu() -> None:
    """Runs wherever nvidia-ml-py and an NVIDIA driver are present (the `gpu` extra)."""
    pynvml = pytest.importorskip("pynvml", reason="nvidia-ml-py is not installed")
    try:
        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
    except Exception as exc:
        pytest.skip(f"no NVIDIA driver or GPU: {exc}")
    gpus = NvmlGpus()
    try:
        temps = gpus.temperatures_c()
        power = gpus.power_watts()
        assert not isinstance(temps, Unknown) and not isinstance(power, Unknown)
        assert temps and all(0.0 < t < 120.0 for t in temps.values())
        assert set(power) == set(temps) and all(w >= 0.0 for w in power.values())
    finally:
        gpus.close()


_LOSE_THE_SERVER = """
import os, subprocess, sys
from r3mes_desktop.adapters.governor.x11 import X11Idle
read, write = os.pipe()
xvfb = subprocess.Popen(
    ["Xvfb", "-displayfd", str(write), "-nolisten", "tcp"],
    pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
)
os.close(write)
display = ":" + os.fdopen(read).readline().strip()
idle = X11Idle(display=display)
print(type(idle.idle_seconds()).__name__)
xvfb.kill()
xvfb.wait()
print(idle.idle_seconds())
print(idle.idle_seconds())
idle.close()
print("alive")
"""


def test_x11_server_going_away_reads_unknown_instead_of_exiting() -> None:
    """Xlib's default on a lost X connection is exit(1): the miner died with the session."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed")
    if ctypes.util.find_library("X11") is None or ctypes.util.find_library("Xss") is None:
        pytest.skip("libX11 or libXss is not installed")
    done = subprocess.run(
        [sys.executable, "-c", _LOSE_THE_SERVER],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lost = "Unknown(why='the X server connection was lost')"
    assert done.stdout.splitlines() == ["float", lost, lost, "alive"]
