"""Battery, other programs' CPU load and running programs, from psutil.

CPU load "by others" is the machine's load minus this process tree's (the miner and its
training / proof-of-work workers): the miner must not pause itself for its own work."""

from __future__ import annotations

import logging
import os
from typing import Any

from r3mes_desktop.adapters.governor.degraded import Degraded
from r3mes_desktop.core.events import EventBus
from r3mes_desktop.core.governor import NO_BATTERY, Battery, Unknown

try:
    import psutil
except ImportError:  # pragma: no cover - psutil is a dependency; a broken install degrades
    psutil = None

log = logging.getLogger(__name__)


class PsutilPower:
    def __init__(self, bus: EventBus | None = None) -> None:
        self._degraded = Degraded("battery", bus)

    def battery(self) -> Battery | Unknown:
        if psutil is None:
            return self._degraded.unknown("psutil is not installed")
        read = getattr(psutil, "sensors_battery", None)
        if read is None:
            return self._degraded.unknown("psutil reads no battery on this platform")
        try:
            state = read()
        except Exception as exc:
            return self._degraded.unknown(str(exc) or type(exc).__name__)
        self._degraded.ok()
        if state is None:
            return NO_BATTERY
        plugged = state.power_plugged
        return Battery(
            on_battery=plugged is False,  # None: the system does not say; assume mains
            percent=float(state.percent) if state.percent is not None else None,
        )


class PsutilCpuLoad:
    """The first reading after construction covers the time since construction."""

    def __init__(self, bus: EventBus | None = None, *, pid: int | None = None) -> None:
        self._degraded = Degraded("CPU load of other programs", bus)
        self._pid = pid if pid is not None else os.getpid()
        self._tree: dict[int, Any] = {}
        self._cpus = 1
        if psutil is not None:
            try:
                self._cpus = psutil.cpu_count() or 1
                psutil.cpu_percent(interval=None)
                self._own_percent()
            except Exception as exc:  # the first reading reports it as Unknown
                log.debug("priming CPU load: %s", exc)

    def _own_percent(self) -> float:
        """This process tree's CPU since the last call, in % of one core (summed)."""
        assert psutil is not None
        root = psutil.Process(self._pid)
        procs = [root, *root.children(recursive=True)]
        total = 0.0
        tree: dict[int, Any] = {}
        for proc in procs:
            known = self._tree.get(proc.pid, proc)
            try:
                total += known.cpu_percent(interval=None)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            tree[proc.pid] = known
        self._tree = tree
        return total

    def other_cpu_percent(self) -> float | Unknown:
        if psutil is None:
            return self._degraded.unknown("psutil is not installed")
        try:
            machine = psutil.cpu_percent(interval=None)
            own = self._own_percent() / self._cpus
        except Exception as exc:
            return self._degraded.unknown(str(exc) or type(exc).__name__)
        self._degraded.ok()
        return max(0.0, min(100.0, float(machine) - own))


class PsutilProcesses:
    def __init__(self, bus: EventBus | None = None) -> None:
        self._degraded = Degraded("running programs", bus)

    def process_names(self) -> frozenset[str] | Unknown:
        if psutil is None:
            return self._degraded.unknown("psutil is not installed")
        try:
            names = frozenset(
                str(proc.info["name"]).lower()
                for proc in psutil.process_iter(["name"])
                if proc.info.get("name")
            )
        except Exception as exc:
            return self._degraded.unknown(str(exc) or type(exc).__name__)
        self._degraded.ok()
        return names
