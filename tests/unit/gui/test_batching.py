"""Event bursts are repainted in batches, the bridge routes by event class, commands run
through one runner, and the latency probe keeps the worst stall of a whole run."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from r3mes_desktop.core.events import EventBus, Notice, RetryScheduled, TransactionStateChanged
from r3mes_desktop.core.txstate import TxState
from r3mes_desktop.gui.bridge import EventBridge, TaskRunner
from r3mes_desktop.gui.commands import CommandRunner, Outcome
from r3mes_desktop.gui.latency import LatencyProbe
from r3mes_desktop.gui.main_window import MainWindow
from r3mes_desktop.gui.qt import QtGui
from tests.helpers.gui_fakes import FakeRuntime


def test_latency_max_covers_the_whole_run_not_the_last_window() -> None:
    probe = LatencyProbe(window=100)
    probe.record(90.0)  # an early stall ...
    for _ in range(500):  # ... followed by more samples than the percentile window holds
        probe.record(1.0)
    summary = probe.summary()
    assert (summary.samples, summary.max_ms, summary.p99_ms) == (501, 90.0, 1.0)
    probe.reset()
    assert (probe.summary().samples, probe.summary().max_ms) == (0, 0.0)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Notice2(Notice):
    """A subclass is another kind of event: it gets the catch-all signal only."""


def test_bridge_routes_by_event_class_not_by_class_name(qtbot: Any) -> None:
    bus = EventBus()
    bridge = EventBridge(bus)
    routed: list[Any] = []
    everything: list[Any] = []
    bridge.notice.connect(routed.append)
    bridge.any_event.connect(everything.append)
    impostor = type("Notice", (), {"kind": "Notice", "transaction_id": None})()
    bus.publish(impostor)  # same class name, not the core's Notice
    bus.publish(Notice2(level="info", message="sub"))
    real = Notice(level="info", message="real")
    bus.publish(real)
    qtbot.waitUntil(lambda: len(everything) == 3, timeout=2000)
    assert routed == [real]
    bridge.close()


def test_command_runner_disables_the_action_reports_and_enables_it_again(
    qtbot: Any, qloop: Any
) -> None:
    tasks = TaskRunner()
    reports: list[Outcome] = []
    settled: list[bool] = []
    runner = CommandRunner(tasks, report=reports.append, settle=lambda: settled.append(True))
    action = QtGui.QAction("Clean up")
    seen_enabled: list[bool] = []

    async def cleanup(*, count: int) -> Outcome:
        seen_enabled.append(action.isEnabled())
        return Outcome(f"cleaned {count}")

    runner.run(cleanup, title="Clean up", action=action, count=2)
    assert not action.isEnabled()
    qtbot.waitUntil(lambda: bool(reports), timeout=2000)
    assert (seen_enabled, reports, settled, action.isEnabled()) == (
        [False],
        [Outcome("cleaned 2")],
        [True],
        True,
    )

    async def broken() -> Outcome:
        raise RuntimeError("journal locked")

    with qtbot.waitSignal(tasks.failed, timeout=2000) as failed:
        runner.run(broken, title="Clean up", action=action)
    assert failed.args == ["Clean up", "journal locked"]
    assert action.isEnabled() and settled == [True, True] and len(reports) == 1


def test_a_burst_of_events_repaints_details_and_tray_once(
    qtbot: Any, qloop: Any, tmp_path: Path
) -> None:
    runtime = FakeRuntime(tmp_path)
    window = MainWindow(runtime, tray_available=True, poll_ms=60_000)
    qtbot.addWidget(window)
    tx_id = runtime.coordinator.new_tx(round_id=4)
    runtime.coordinator.move(tx_id, TxState.TRAINING)
    qtbot.waitUntil(lambda: window.tx_model.row(tx_id) is not None, timeout=2000)
    row = window.tx_model.row(tx_id)
    assert row is not None and window.tray is not None
    window.details.show_row(row)
    painted: list[str] = []
    show_row = window.details.show_row
    window.details.show_row = lambda *a, **k: (painted.append("details"), show_row(*a, **k))  # type: ignore[method-assign]
    set_status = window.tray.set_status
    window.tray.set_status = lambda *a: (painted.append("tray"), set_status(*a))  # type: ignore[method-assign]
    window.tick_timer.stop()  # only the event-driven repaints count here
    for attempt in range(1, 21):
        runtime.bus.publish(
            RetryScheduled(
                operation="ipfs.add",
                service="ipfs",
                attempt=attempt,
                delay=1.0,
                category="network",
                message="connection refused",
                transaction_id=tx_id,
            )
        )
        runtime.bus.publish(
            TransactionStateChanged(
                transaction_id=tx_id,
                round_id=4,
                old_state="training",
                new_state="training",
            )
        )
    qtbot.waitUntil(lambda: "tray" in painted, timeout=2000)
    qtbot.wait(2 * MainWindow.REPAINT_MS)
    assert sorted(painted) == ["details", "tray"]
    assert "Can't reach IPFS" in window.status.problem.text()
    window.shutdown_widgets()


def test_latency_probe_tells_a_busy_stall_from_a_waiting_one(qtbot: Any) -> None:
    import time

    from r3mes_desktop.gui.qt import QtCore

    def spin(cpu_seconds: float) -> None:  # CPU time, not wall time: a loaded machine
        end = time.thread_time() + cpu_seconds  # must not turn it into a wait
        while time.thread_time() < end:
            pass

    # 0.3 s: longer than anything a loaded test machine adds, so it is the worst stall.
    for hog, busy in ((lambda: time.sleep(0.3), False), (lambda: spin(0.3), True)):
        probe = LatencyProbe(interval_ms=5)
        probe.start()
        qtbot.wait(30)
        QtCore.QTimer.singleShot(0, hog)
        qtbot.waitUntil(lambda p=probe: p.summary().max_ms >= 280, timeout=5000)
        probe.stop()
        summary = probe.summary()
        assert (summary.max_cpu_ms >= 250) is busy, summary
        assert (summary.max_cpu_ms <= 100) is not busy, summary
