"""bench.gui --trace-stalls on the real latency probe: the watchdog thread reads the probe's
next due time and names what the GUI thread ran during a stall."""

from __future__ import annotations

import threading
import time
from typing import Any

from bench.stalls import StallTracer
from r3mes_desktop.gui.latency import LatencyProbe
from r3mes_desktop.gui.qt import QtCore


def slot_that_hogs_the_loop() -> None:
    end = time.thread_time() + 0.150  # CPU time: a loaded machine must not make it a wait
    while time.thread_time() < end:
        pass


def test_the_tracer_names_the_slot_that_stalled_the_probe(qtbot: Any) -> None:
    probe = LatencyProbe(interval_ms=5)
    assert probe.due is None  # not started: nothing is overdue
    probe.start()
    tracer = StallTracer(lambda: probe.due, thread_id=threading.get_ident(), threshold_ms=100.0)
    with tracer:
        qtbot.wait(30)
        QtCore.QTimer.singleShot(0, slot_that_hogs_the_loop)
        qtbot.waitUntil(lambda: probe.summary().max_ms >= 100, timeout=5000)
        qtbot.wait(30)  # the watchdog sees the tick that ended it
    probe.stop()

    assert probe.due is None
    worst = max(tracer.stalls, key=lambda s: s.lateness_ms)
    assert worst.lateness_ms >= 100
    frames = [line for stack in worst.stacks for line in stack]
    assert any(line.endswith(" slot_that_hogs_the_loop") for line in frames), worst.stacks
