"""The governor's policies over injected sources and an injected clock."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

import pytest

from r3mes_desktop.core.clock import ManualClock
from r3mes_desktop.core.governor import (
    NO_BATTERY,
    Battery,
    BatteryRule,
    Decision,
    Governor,
    GpuTemperature,
    MaxOtherCpu,
    OnlyWhenIdle,
    PauseWhile,
    Sources,
    TimeWindows,
    Unknown,
    Window,
)


@dataclass
class FakeIdle:
    seconds: float | Unknown = 0.0

    def idle_seconds(self) -> float | Unknown:
        return self.seconds


@dataclass
class FakePower:
    state: Battery | Unknown = NO_BATTERY

    def battery(self) -> Battery | Unknown:
        return self.state


@dataclass
class FakeCpu:
    load: float | Unknown = 0.0

    def other_cpu_percent(self) -> float | Unknown:
        return self.load


@dataclass
class FakeProcesses:
    names: frozenset[str] | Unknown = frozenset()

    def process_names(self) -> frozenset[str] | Unknown:
        return self.names


@dataclass
class FakeGpu:
    temps: Mapping[int, float] | Unknown

    def temperatures_c(self) -> Mapping[int, float] | Unknown:
        return self.temps


class Broken:
    def idle_seconds(self) -> float | Unknown:
        raise OSError("display went away")


def _governor(*policies: object, **sources: object) -> Governor:
    return Governor(policies, Sources(**sources), clock=ManualClock())  # type: ignore[arg-type]


def test_no_policy_is_always() -> None:
    assert _governor().evaluate() == Decision(may_run=True)


def test_idle_policy_pauses_on_input_and_resumes_after_the_idle_time() -> None:
    idle = FakeIdle(600.0)
    gov = _governor(OnlyWhenIdle(3), idle=idle)
    assert gov.evaluate().may_run
    idle.seconds = 0.2  # a key was pressed
    decision = gov.evaluate()
    assert not decision.may_run
    assert decision.summary == "paused: computer in use — resumes after 3 min idle"
    idle.seconds = 130.0
    # the same reason while the idle time grows: one event per change of state, not per tick
    assert gov.evaluate() == decision
    idle.seconds = 180.0
    assert gov.evaluate().may_run


def test_unknown_idle_time_is_treated_as_in_use() -> None:
    gov = _governor(OnlyWhenIdle(1), idle=FakeIdle(Unknown("no X display")))
    decision = gov.evaluate()
    assert not decision.may_run
    assert decision.reasons == (
        "idle time cannot be read (no X display): treated as in use, not mining",
    )


def test_a_source_that_raises_reads_as_unknown() -> None:
    decision = _governor(OnlyWhenIdle(1), idle=Broken()).evaluate()
    assert not decision.may_run
    assert "idle time source failed: display went away" in decision.reasons[0]


def test_a_missing_source_reads_as_unknown() -> None:
    decision = _governor(MaxOtherCpu(50)).evaluate()
    assert decision.may_run
    assert decision.notes == (
        "CPU load of other programs cannot be read (no CPU load source on this system)",
    )


def test_not_on_battery() -> None:
    power = FakePower(Battery(on_battery=True, percent=90))
    gov = _governor(BatteryRule(), power=power)
    assert gov.evaluate().reasons == ("on battery — resumes when plugged in",)
    power.state = Battery(on_battery=False, percent=90)
    assert gov.evaluate().may_run


def test_battery_floor() -> None:
    power = FakePower(Battery(on_battery=True, percent=45))
    gov = _governor(BatteryRule(floor=30), power=power)
    assert gov.evaluate().may_run
    power.state = Battery(on_battery=True, percent=18)
    assert gov.evaluate().reasons == ("battery at 18% (floor 30%) — resumes when plugged in",)
    power.state = Battery(on_battery=True, percent=None)
    assert not gov.evaluate().may_run


def test_unknown_battery_is_treated_as_mains_power() -> None:
    decision = _governor(BatteryRule(), power=FakePower(Unknown("no sensors"))).evaluate()
    assert decision.may_run
    assert decision.notes == ("battery cannot be read (no sensors): treated as on mains power",)
    assert _governor(BatteryRule(), power=FakePower(NO_BATTERY)).evaluate() == Decision(True)


def test_other_cpu_load() -> None:
    cpu = FakeCpu(73.4)
    gov = _governor(MaxOtherCpu(50), cpu=cpu)
    assert gov.evaluate().reasons == (
        "other programs use 73% CPU (limit 50%) — resumes when they use less",
    )
    cpu.load = 50.0
    assert gov.evaluate().may_run


def test_pause_while_named_programs_run() -> None:
    procs = FakeProcesses(frozenset({"bash", "steam.exe", "zoom"}))
    gov = _governor(PauseWhile(("Steam", "zoom", "obs")), processes=procs)
    assert gov.evaluate().reasons == ("Steam, zoom are running — resumes when they exit",)
    procs.names = frozenset({"zoom"})
    assert gov.evaluate().reasons == ("zoom is running — resumes when it exits",)
    procs.names = frozenset({"bash"})
    assert gov.evaluate().may_run
    procs.names = Unknown("access denied")
    decision = gov.evaluate()
    assert decision.may_run and decision.notes == (
        "running programs cannot be listed (access denied)",
    )


def test_gpu_temperature_hysteresis_holds_only_the_hot_gpu() -> None:
    gpu = FakeGpu({0: 70.0, 1: 60.0})
    gov = _governor(GpuTemperature(limit_c=84, delta_c=6), gpu=gpu)
    seen = []
    for temp in (70, 83, 84, 82, 79, 78, 80, 83):
        gpu.temps = {0: float(temp), 1: 60.0}
        decision = gov.evaluate()
        assert decision.may_run  # the other GPU (and the rest of mining) goes on
        seen.append(tuple(device for device, _ in decision.devices_held))
    # held at 84, through 82 and 79, released at 78, not held again below 84
    assert seen == [(), (), ("cuda:0",), ("cuda:0",), ("cuda:0",), (), (), ()]
    gpu.temps = {0: 50.0, 1: 84.4}
    decision = gov.evaluate()
    assert decision.devices_held == (("cuda:1", "GPU 1 at 84 °C, resumes at 78 °C"),)
    assert decision.summary == "held back: GPU 1 at 84 °C, resumes at 78 °C"
    gpu.temps = {0: 85.0, 1: 80.0}  # GPU 1 still above its resume point: both held
    assert [d for d, _ in gov.evaluate().devices_held] == ["cuda:0", "cuda:1"]
    gpu.temps = Unknown("NVML not installed")
    decision = gov.evaluate()
    assert decision.notes == ("GPU temperature cannot be read (NVML not installed)",)
    assert decision.devices_held == ()
    gpu.temps = {0: 80.0, 1: 80.0}  # an unknown reading forgot the holds: 80 < 84 runs
    assert gov.evaluate().devices_held == ()


def _at(text: str) -> Sources:
    return Sources(local_time=lambda: dt.datetime.fromisoformat(text))


def test_time_windows_per_weekday() -> None:
    windows = TimeWindows((Window.parse("sat:09:00-17:30"), Window.parse("fri:22:00-06:00")))
    # 2026-12-04 is a Friday
    cases = {
        "2026-12-04T21:59": "outside the mining hours — resumes fri 22:00",
        "2026-12-04T22:00": None,
        "2026-12-05T05:59": None,  # Friday's window runs past midnight
        "2026-12-05T06:00": "outside the mining hours — resumes sat 09:00",
        "2026-12-05T12:00": None,
        "2026-12-05T17:30": "outside the mining hours — resumes fri 22:00",
        "2026-12-07T08:00": "outside the mining hours — resumes fri 22:00",
    }
    for when, reason in cases.items():
        decision = Governor([windows], _at(when)).evaluate()
        assert decision.reasons == (() if reason is None else (reason,)), when


def test_sunday_window_past_midnight_reaches_monday() -> None:
    windows = TimeWindows((Window.parse("sun:23:00-01:00"),))
    assert Governor([windows], _at("2026-12-07T00:30")).evaluate().may_run  # Monday
    assert not Governor([windows], _at("2026-12-07T01:00")).evaluate().may_run


@pytest.mark.parametrize("text", ["sat", "xyz:09:00-10:00", "sat:9-10", "sat:09:00-25:00", ""])
def test_window_parse_errors_say_the_format(text: str) -> None:
    with pytest.raises(ValueError, match="expected DAY:HH:MM-HH:MM"):
        Window.parse(text)


def test_policies_combine_and_every_reason_shows() -> None:
    gov = _governor(
        OnlyWhenIdle(3),
        BatteryRule(),
        MaxOtherCpu(50),
        idle=FakeIdle(10.0),
        power=FakePower(Battery(on_battery=True, percent=80)),
        cpu=FakeCpu(Unknown("no psutil")),
    )
    decision = gov.evaluate()
    assert decision.summary == (
        "paused: computer in use — resumes after 3 min idle; on battery — resumes when plugged in"
    )
    assert decision.notes == ("CPU load of other programs cannot be read (no psutil)",)


def test_each_source_is_read_once_per_evaluation() -> None:
    calls = []

    class Counting:
        def idle_seconds(self) -> float | Unknown:
            calls.append(1)
            return 0.0

    _governor(OnlyWhenIdle(1), OnlyWhenIdle(2), idle=Counting()).evaluate()
    assert len(calls) == 1
