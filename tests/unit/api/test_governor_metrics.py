"""The governor on /metrics: parsed with prometheus_client's own parsers (text and
OpenMetrics), one series per hold / held device / device, GPU series absent without NVML."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from r3mes_desktop.api.governor_metrics import GovernorView, policy_label
from r3mes_desktop.api.metrics import MinerMetrics
from r3mes_desktop.api.monitoring import Monitoring, governor_view
from r3mes_desktop.core.events import EventBus, GovernorStateChanged
from r3mes_desktop.core.governor import Decision, Unknown
from r3mes_desktop.support.config import Settings
from tests.helpers.coordinator_rig import make_rig
from tests.unit.api.conftest import Api

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
GOVERNOR_FAMILIES = {
    "r3mes_governor_may_run",
    "r3mes_governor_hold",
    "r3mes_governor_unevaluated_policies",
    "r3mes_governor_device_held",
    "r3mes_mining_device_enabled",
    "r3mes_gpu_temperature_celsius",
    "r3mes_gpu_power_watts",
}


def _parse(text: str) -> tuple[set[str], Samples]:
    families, samples = set(), {}
    for family in text_string_to_metric_families(text):
        families.add(family.name)
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return families, samples


def _governor(samples: Samples) -> Samples:
    prefixes = ("r3mes_governor", "r3mes_gpu", "r3mes_mining_device")
    return {k: v for k, v in samples.items() if k[0].startswith(prefixes)}


async def _scrape(metrics: MinerMetrics) -> tuple[set[str], Samples]:
    await metrics.refresh()
    return _parse(metrics.exposition().decode())


class FakeGpus:
    def __init__(
        self,
        temperatures: Mapping[int, float] | Unknown,
        power: Mapping[int, float] | Unknown,
    ) -> None:
        self.temperatures = temperatures
        self.power = power
        self.threads: list[str] = []
        self.closed = False

    def temperatures_c(self) -> Mapping[int, float] | Unknown:
        self.threads.append(threading.current_thread().name)
        return self.temperatures

    def power_watts(self) -> Mapping[int, float] | Unknown:
        return self.power

    def close(self) -> None:
        self.closed = True


def test_policy_labels() -> None:
    assert policy_label("OnlyWhenIdle") == "only_when_idle"
    assert policy_label("MaxOtherCpu") == "max_other_cpu"
    assert policy_label("GpuTemperature") == "gpu_temperature"


async def test_a_hold_is_one_series_per_policy_and_held_device() -> None:
    decision = Decision(
        may_run=False,
        reasons=("computer in use — resumes after 3 min idle", "other programs use 73% CPU"),
        notes=("battery unknown (no battery source on this system): mining on mains",),
        held_by=("OnlyWhenIdle", "MaxOtherCpu"),
        devices_held=(("cuda:1", "GPU 1 at 84 °C, resumes at 78 °C"),),
    )
    gpus = FakeGpus({0: 61.0, 1: 84.0}, {0: 120.5, 1: 250.0})
    view = GovernorView(
        decision=lambda: decision,
        devices=lambda: {"cuda:0": True, "cuda:1": True, "cpu": False},
        gpus=gpus,
        close=gpus.close,
    )
    metrics = MinerMetrics(EventBus(), governor=view)
    families, samples = await _scrape(metrics)
    assert families >= GOVERNOR_FAMILIES
    assert _governor(samples) == {
        ("r3mes_governor_may_run", ()): 0.0,
        (
            "r3mes_governor_hold",
            (("policy", "only_when_idle"), ("reason", decision.reasons[0])),
        ): 1.0,
        (
            "r3mes_governor_hold",
            (("policy", "max_other_cpu"), ("reason", decision.reasons[1])),
        ): 1.0,
        ("r3mes_governor_unevaluated_policies", ()): 1.0,
        (
            "r3mes_governor_device_held",
            (("device", "cuda:1"), ("reason", "GPU 1 at 84 °C, resumes at 78 °C")),
        ): 1.0,
        ("r3mes_mining_device_enabled", (("device", "cpu"),)): 0.0,
        ("r3mes_mining_device_enabled", (("device", "cuda:0"),)): 1.0,
        ("r3mes_mining_device_enabled", (("device", "cuda:1"),)): 1.0,
        ("r3mes_gpu_temperature_celsius", (("device", "cuda:0"),)): 61.0,
        ("r3mes_gpu_temperature_celsius", (("device", "cuda:1"),)): 84.0,
        ("r3mes_gpu_power_watts", (("device", "cuda:0"),)): 120.5,
        ("r3mes_gpu_power_watts", (("device", "cuda:1"),)): 250.0,
    }
    assert gpus.threads and gpus.threads[0] != threading.main_thread().name  # not the loop
    metrics.close()
    assert gpus.closed


async def test_openmetrics_parses_the_same_series() -> None:
    decision = Decision(may_run=False, reasons=("outside mining hours",), held_by=("TimeWindows",))
    metrics = MinerMetrics(
        governor=GovernorView(decision=lambda: decision, devices=lambda: {"cpu": True})
    )
    await metrics.refresh()
    body, content_type = metrics.negotiate("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    found = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in openmetrics_families(body.decode())  # type: ignore[no-untyped-call] # untyped in prometheus_client
        for s in family.samples
    }
    assert found[("r3mes_governor_may_run", ())] == 0.0
    hold = ("r3mes_governor_hold", (("policy", "time_windows"), ("reason", "outside mining hours")))
    assert found[hold] == 1.0
    metrics.close()


async def test_gpu_series_are_absent_not_zero_without_nvml() -> None:
    unknown = Unknown("nvidia-ml-py is not installed")
    metrics = MinerMetrics(governor=GovernorView(gpus=FakeGpus(unknown, unknown)))
    families, samples = await _scrape(metrics)
    assert "r3mes_gpu_temperature_celsius" in families  # described, with no sample
    assert not [k for k in samples if k[0].startswith("r3mes_gpu")]
    metrics.close()


async def test_a_gpu_source_that_raises_is_absent_too() -> None:
    class Broken(FakeGpus):
        def temperatures_c(self) -> Mapping[int, float] | Unknown:
            raise RuntimeError("driver went away")

    metrics = MinerMetrics(governor=GovernorView(gpus=Broken({}, {0: 90.0})))
    _, samples = await _scrape(metrics)
    assert not [k for k in samples if k[0] == "r3mes_gpu_temperature_celsius"]
    assert samples[("r3mes_gpu_power_watts", (("device", "cuda:0"),))] == 90.0
    metrics.close()


async def test_no_governor_means_mining_may_run_and_nothing_held() -> None:
    metrics = MinerMetrics(EventBus(), governor=GovernorView(decision=lambda: None))
    _, samples = await _scrape(metrics)
    assert _governor(samples) == {
        ("r3mes_governor_may_run", ()): 1.0,
        ("r3mes_governor_unevaluated_policies", ()): 0.0,
    }
    metrics.close()


async def test_without_a_decision_the_bus_event_is_read(api: Api) -> None:
    """The API's default metrics (no runtime view) follow GovernorStateChanged."""
    async with api.client.get("/metrics") as r:
        _, before = _parse(await r.text())
    assert before[("r3mes_governor_may_run", ())] == 1.0
    api.bus.publish(
        GovernorStateChanged(
            may_run=False,
            summary="paused: on battery",
            reasons=("on battery — resumes on mains power",),
            devices_held=("GPU 0 at 84 °C, resumes at 78 °C",),
        )
    )
    async with api.client.get("/metrics") as r:
        _, after = _parse(await r.text())
    assert after[("r3mes_governor_may_run", ())] == 0.0
    key = (
        "r3mes_governor_hold",
        (("policy", ""), ("reason", "on battery — resumes on mains power")),
    )
    assert after[key] == 1.0
    held = (
        "r3mes_governor_device_held",
        (("device", ""), ("reason", "GPU 0 at 84 °C, resumes at 78 °C")),
    )
    assert after[held] == 1.0  # the event names no device
    api.bus.publish(GovernorStateChanged(may_run=True, summary="mining allowed"))
    async with api.client.get("/metrics") as r:
        _, cleared = _parse(await r.text())
    assert cleared[("r3mes_governor_may_run", ())] == 1.0
    assert not [k for k in cleared if k[0] in ("r3mes_governor_hold", held[0])]


class FakePool:
    def __init__(self) -> None:
        self.members = {"cpu": object(), "cuda:0": object()}
        self.enabled = frozenset({"cuda:0"})
        self.held = {"cuda:0": "GPU 0 at 84 °C, resumes at 78 °C"}


async def test_runtime_view_reads_the_pool_and_the_decision() -> None:
    decision = Decision(may_run=True)
    runtime = SimpleNamespace(trainer=FakePool(), governor_decision=decision)
    gpus = FakeGpus({0: 70.0}, {0: 100.0})
    view = governor_view(runtime, gpus=gpus)
    assert view.decision is not None and view.decision() is decision
    assert view.devices is not None and view.devices() == {"cpu": False, "cuda:0": True}
    assert view.held is not None and view.held() == {"cuda:0": "GPU 0 at 84 °C, resumes at 78 °C"}
    runtime.governor_decision = None  # read at each scrape, not once
    assert view.decision() is None


async def test_runtime_view_without_a_pool_or_decision_uses_settings_and_events() -> None:
    runtime = SimpleNamespace(trainer=None, settings=Settings(mining_devices=("cpu",)))
    view = governor_view(runtime, gpus=FakeGpus({}, {}))
    assert view.decision is None  # the bus's GovernorStateChanged stands in
    assert view.devices is not None and view.devices() == {"cpu": True}
    assert view.held is not None and view.held() == {}
    bus = EventBus()
    metrics = MinerMetrics(bus, governor=view)
    bus.publish(GovernorStateChanged(may_run=False, summary="paused", reasons=("x",)))
    _, samples = await _scrape(metrics)
    assert samples[("r3mes_governor_may_run", ())] == 0.0
    assert samples[("r3mes_mining_device_enabled", (("device", "cpu"),))] == 1.0
    metrics.close()


async def test_monitoring_serves_governor_series(tmp_path: Path) -> None:
    """The real attach: NVML's absence on this machine leaves the GPU series out."""
    rig = make_rig(tmp_path)
    runtime: Any = SimpleNamespace(
        bus=rig.bus,
        coordinator=rig.coordinator,
        breakers=rig.coordinator.breakers,
        settings=Settings(api_enabled=True, mining_devices=("cpu",)),
        governor_decision=Decision(
            may_run=False, reasons=("computer in use",), held_by=("OnlyWhenIdle",)
        ),
    )
    await rig.coordinator.start(background=False)
    monitoring = await Monitoring.attach(runtime, port=0)
    try:
        assert monitoring.api_url is not None
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{monitoring.api_url}/metrics") as r,
        ):
            families, samples = _parse(await r.text())
    finally:
        await monitoring.close()
        await rig.coordinator.close()
    assert families >= GOVERNOR_FAMILIES
    assert samples[("r3mes_governor_may_run", ())] == 0.0
    hold = ("r3mes_governor_hold", (("policy", "only_when_idle"), ("reason", "computer in use")))
    assert samples[hold] == 1.0
    assert samples[("r3mes_mining_device_enabled", (("device", "cpu"),))] == 1.0


async def test_scraping_without_nvml_warns_nobody(caplog: pytest.LogCaptureFixture) -> None:
    """No NVIDIA GPU is normal: the scrape leaves the GPU series out and logs no warning
    (the governor's own GPU source warns when the temperature policy is on)."""
    from r3mes_desktop.adapters.governor.nvml import NvmlGpus

    gpus = NvmlGpus()
    metrics = MinerMetrics(governor=GovernorView(gpus=gpus, close=gpus.close))
    with caplog.at_level(logging.WARNING):
        _, samples = await _scrape(metrics)
        _, samples = await _scrape(metrics)
    metrics.close()
    if any(k[0] == "r3mes_gpu_temperature_celsius" for k in samples):
        pytest.skip("NVML reads a GPU on this machine: nothing to be quiet about")
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
