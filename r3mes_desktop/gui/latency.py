"""Event-loop lateness probe: how long the GUI thread kept a timer waiting.

A precise timer asks to fire every `interval_ms`; the difference between when it fired and
when it was due is time the loop spent busy elsewhere (a stall the user would feel). The
window shows the figures and `bench.gui` prints them; the target is p99 ≤ 16 ms (one frame).
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass

from r3mes_desktop.gui.qt import Qt, QtCore


@dataclass(frozen=True)
class LatencySummary:
    samples: int
    p50_ms: float
    p99_ms: float
    max_ms: float

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
        self._due: float | None = None
        self._timer = QtCore.QTimer(self)
        self._timer.setObjectName("latency-probe")
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._tick)

    def start(self) -> None:
        self._due = time.perf_counter() + self._interval_s
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()
        self._due = None

    def reset(self) -> None:
        self._samples.clear()

    def _tick(self) -> None:
        now = time.perf_counter()
        if self._due is not None:
            self._samples.append(max(0.0, now - self._due) * 1000.0)
        self._due = now + self._interval_s

    def record(self, lateness_ms: float) -> None:
        """Add one measurement (used by tests and by other probes feeding the same stats)."""
        self._samples.append(lateness_ms)

    def summary(self) -> LatencySummary:
        values = sorted(self._samples)
        return LatencySummary(
            samples=len(values),
            p50_ms=percentile(values, 0.50),
            p99_ms=percentile(values, 0.99),
            max_ms=values[-1] if values else 0.0,
        )
