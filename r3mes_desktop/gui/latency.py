"""Event-loop lateness probe: how long the GUI thread kept a timer waiting.

A precise timer asks to fire every `interval_ms`; the difference between when it fired and
when it was due is time the loop spent busy elsewhere (a stall the user would feel). The
window shows the figures and `bench.gui` prints them; the targets are p99 ≤ 16 ms (one
frame) and no stall over 50 ms (`MAX_TARGET_MS`).

Percentiles come from the last `window` samples (a minute at 10 ms), but the maximum and
the count cover everything since the last `reset()`: a five-minute run must report its
worst stall even when it happened in the first minute.

With the worst stall the probe keeps how much CPU the GUI thread itself used during it: a
stall the thread spent computing (a paint, a slot) is ours to fix; one in which it used
almost none was spent waiting (for a core on an overloaded machine, or for the GIL).
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass

from r3mes_desktop.gui.qt import Qt, QtCore

MAX_TARGET_MS = 50.0
"""The longest loop stall allowed while mining (the PASS/FAIL line of `bench.gui`)."""


@dataclass(frozen=True)
class LatencySummary:
    samples: int  # since the last reset (the percentiles use the last `window` of them)
    p50_ms: float
    p99_ms: float
    max_ms: float  # since the last reset
    max_cpu_ms: float = 0.0  # the GUI thread's CPU time within the worst stall

    def __str__(self) -> str:
        return (
            f"loop lateness p50 {self.p50_ms:.1f} ms · p99 {self.p99_ms:.1f} ms · "
            f"max {self.max_ms:.1f} ms ({self.samples} samples)"
        )


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted list (0.0 for an empty one)."""
    if not sorted_values:
        return 0.0
    rank = math.ceil(fraction * len(sorted_values))  # 1-based nearest rank
    return sorted_values[max(0, min(len(sorted_values), rank) - 1)]


class LatencyProbe(QtCore.QObject):
    """Records timer lateness in milliseconds over the last `window` samples."""

    def __init__(
        self,
        interval_ms: int = 10,
        window: int = 6000,
        parent: QtCore.QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self._interval_s = interval_ms / 1000.0
        self._samples: deque[float] = deque(maxlen=window)
        self._count = 0
        self._max_ms = 0.0
        self._max_cpu_ms = 0.0
        self._due: float | None = None
        self._cpu = 0.0
        self._timer = QtCore.QTimer(self)
        self._timer.setObjectName("latency-probe")
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._tick)

    @property
    def due(self) -> float | None:
        """When the next tick is due (`time.perf_counter` seconds); None while stopped.
        Read from another thread by `bench.stalls`, which samples stacks while it is past."""
        return self._due

    def start(self) -> None:
        self._due = time.perf_counter() + self._interval_s
        self._cpu = time.thread_time()
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()
        self._due = None

    def reset(self) -> None:
        self._samples.clear()
        self._count = 0
        self._max_ms = 0.0
        self._max_cpu_ms = 0.0

    def _tick(self) -> None:
        now, cpu = time.perf_counter(), time.thread_time()
        if self._due is not None:
            # CPU since the last tick: the interval's own work plus the stall's.
            self.record(max(0.0, now - self._due) * 1000.0, cpu_ms=(cpu - self._cpu) * 1000.0)
        self._due, self._cpu = now + self._interval_s, cpu

    def record(self, lateness_ms: float, *, cpu_ms: float = 0.0) -> None:
        """Add one measurement (used by tests and by other probes feeding the same stats);
        `cpu_ms`: the GUI thread's CPU time over it, when known."""
        self._samples.append(lateness_ms)
        self._count += 1
        if lateness_ms > self._max_ms:
            self._max_ms, self._max_cpu_ms = lateness_ms, cpu_ms

    def summary(self) -> LatencySummary:
        values = sorted(self._samples)
        return LatencySummary(
            samples=self._count,
            p50_ms=percentile(values, 0.50),
            p99_ms=percentile(values, 0.99),
            max_ms=self._max_ms,
            max_cpu_ms=self._max_cpu_ms,
        )
