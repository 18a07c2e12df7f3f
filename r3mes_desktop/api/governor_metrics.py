"""The resource governor on /metrics: whether mining may run, what holds it back, which
devices are held or enabled, and each GPU's temperature and power draw.

Read at scrape time from a `GovernorView` (the runtime's last decision, its trainer pool,
NVML), with the bus's `GovernorStateChanged` as the fallback where the runtime offers no
decision. Series:

    r3mes_governor_may_run                      1 when no policy holds mining back
    r3mes_governor_hold{policy,reason}          1 per policy holding mining back
    r3mes_governor_unevaluated_policies         policies whose readings were unknown
    r3mes_governor_device_held{device,reason}   1 per device held back alone (too hot)
    r3mes_mining_device_enabled{device}         1 enabled, 0 present but switched off
    r3mes_gpu_temperature_celsius{device}       per GPU, from NVML
    r3mes_gpu_power_watts{device}               per GPU, from NVML

`policy` is stable (the policy's name: `only_when_idle`, `gpu_temperature`, ...); `reason`
is the sentence the status bar shows, which may carry a figure ("other programs use 73 %
CPU"), so dashboards and alerts should aggregate by `policy`. The GPU series are absent,
not 0, when NVML cannot be read: 0 °C would be a reading, and a wrong one.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from r3mes_desktop.adapters.governor.degraded import quiet_degraded
from r3mes_desktop.core.events import Event, EventBus, GovernorStateChanged
from r3mes_desktop.core.governor import Decision, Unknown

log = logging.getLogger(__name__)


class GpuReader(Protocol):
    """`adapters.governor.nvml.NvmlGpus`, by GPU index (NVML's, the PCI bus order)."""

    def temperatures_c(self) -> Mapping[int, float] | Unknown: ...

    def power_watts(self) -> Mapping[int, float] | Unknown: ...


@dataclass
class GovernorView:
    """Where the governor's facts come from; any of them may be missing.

    `decision`: the governor's last decision (None: no policy on, or none evaluated yet);
    `devices`: every mining device the runtime has, enabled or not; `held`: the devices
    the trainer pool holds back, with why (used when there is no decision to read);
    `gpus`: NVML, read in a thread at each scrape; `close`: releases what the view holds.
    """

    decision: Callable[[], Decision | None] | None = None
    devices: Callable[[], Mapping[str, bool]] | None = None
    held: Callable[[], Mapping[str, str]] | None = None
    gpus: GpuReader | None = None
    close: Callable[[], None] | None = None


def policy_label(class_name: str) -> str:
    """`OnlyWhenIdle` → `only_when_idle`."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", class_name).lower()


def _readings(read: Callable[[], Mapping[int, float] | Unknown]) -> dict[int, float]:
    """One NVML reading; nothing when it cannot be read. No warning either: a machine
    without an NVIDIA GPU is normal here, and the governor's own GPU source (when the
    temperature policy is on) is the one that tells the user."""
    try:
        with quiet_degraded():
            values = read()
    except Exception as exc:  # a source must not break the scrape
        log.debug("GPU reading failed: %s", exc)
        return {}
    return {} if isinstance(values, Unknown) else dict(values)


class GovernorCollector(Collector):
    def __init__(self, bus: EventBus | None = None, view: GovernorView | None = None) -> None:
        self.view = view or GovernorView()
        self._event: GovernorStateChanged | None = None
        self._temperatures: dict[int, float] = {}
        self._power: dict[int, float] = {}
        self._unsubscribe = bus.subscribe(self.observe) if bus is not None else None

    def observe(self, event: Event) -> None:
        if isinstance(event, GovernorStateChanged):
            self._event = event

    def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self.view.close is not None:
            self.view.close()
            self.view.close = None

    async def refresh(self) -> None:
        """Read the GPUs (NVML calls block for milliseconds: in a thread, not the loop)."""
        gpus = self.view.gpus
        if gpus is None:
            return
        self._temperatures, self._power = await asyncio.to_thread(
            lambda: (_readings(gpus.temperatures_c), _readings(gpus.power_watts))
        )

    def _decision(self) -> Decision | None:
        if self.view.decision is not None:
            return self.view.decision()
        event = self._event
        if event is None:
            return None
        return Decision(may_run=event.may_run, reasons=event.reasons, notes=event.notes)

    def _devices_held(self, decision: Decision | None) -> list[tuple[str, str]]:
        if self.view.decision is not None and decision is not None:
            return list(decision.devices_held)
        if self.view.held is not None:
            return sorted(self.view.held().items())
        event = self._event
        reasons = event.devices_held if event is not None else ()
        return [("", reason) for reason in reasons]  # the event names no device

    def collect(self) -> Iterable[Metric]:
        decision = self._decision()
        yield GaugeMetricFamily(
            "r3mes_governor_may_run",
            "1 when the resource governor lets mining run (no policy holds it back)",
            value=1.0 if decision is None or decision.may_run else 0.0,
        )
        hold = GaugeMetricFamily(
            "r3mes_governor_hold",
            "1 per policy holding mining back; `reason` is the status bar's sentence",
            labels=["policy", "reason"],
        )
        if decision is not None:
            for reason, policy in itertools.zip_longest(decision.reasons, decision.held_by):
                if reason is not None:
                    hold.add_metric([policy_label(policy or ""), reason], 1.0)
        yield hold
        yield GaugeMetricFamily(
            "r3mes_governor_unevaluated_policies",
            "Policies whose readings were unknown at the last evaluation (mining not held "
            "back by them, or treated as in use for idle time)",
            value=float(len(decision.notes)) if decision is not None else 0.0,
        )
        held = GaugeMetricFamily(
            "r3mes_governor_device_held",
            "1 per mining device the governor holds back while the others mine",
            labels=["device", "reason"],
        )
        for device, reason in self._devices_held(decision):
            held.add_metric([device, reason], 1.0)
        yield held
        yield from self._device_series()

    def _device_series(self) -> Iterable[Metric]:
        enabled = GaugeMetricFamily(
            "r3mes_mining_device_enabled",
            "Mining devices: 1 enabled (takes rounds), 0 present but switched off",
            labels=["device"],
        )
        devices = self.view.devices() if self.view.devices is not None else {}
        for device, on in sorted(devices.items()):
            enabled.add_metric([device], 1.0 if on else 0.0)
        yield enabled
        temperature = GaugeMetricFamily(
            "r3mes_gpu_temperature_celsius",
            "GPU temperature from NVML (absent when NVML cannot be read)",
            labels=["device"],
        )
        for index, value in sorted(self._temperatures.items()):
            temperature.add_metric([f"cuda:{index}"], value)
        yield temperature
        power = GaugeMetricFamily(
            "r3mes_gpu_power_watts",
            "GPU power draw from NVML (absent when NVML cannot be read)",
            labels=["device"],
        )
        for index, value in sorted(self._power.items()):
            power.add_metric([f"cuda:{index}"], value)
        yield power
