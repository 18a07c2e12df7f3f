"""The window's parts in isolation: bridge, task runner, latency probe, single instance,
status sentences, log view, breakers panel on the real registry, tray/close behaviour."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from r3mes_desktop.core.events import BreakerStateChanged, EventBus, Notice, RetryScheduled
from r3mes_desktop.core.records import CleanupReport, TransactionStatus
from r3mes_desktop.core.resilience.breaker import BreakerRegistry, BreakerState
from r3mes_desktop.gui.bridge import EventBridge, TaskRunner
from r3mes_desktop.gui.latency import LatencyProbe, percentile
from r3mes_desktop.gui.main_window import MainWindow
from r3mes_desktop.gui.models.records import describe_cleanup, describe_resumable
from r3mes_desktop.gui.qt import QtCore, QtWidgets
from r3mes_desktop.gui.single_instance import SingleInstance
from r3mes_desktop.gui.widgets.breakers_panel import BreakersModel, BreakersPanel
from r3mes_desktop.gui.widgets.log_view import LogModel, LogView, QtLogHandler
from r3mes_desktop.gui.widgets.status_bar import StatusBarController
from tests.helpers.gui_fakes import FakeRuntime, dead_letter


def test_bridge_delivers_events_from_another_thread_on_the_gui_thread(qtbot: Any) -> None:
    bus = EventBus()
    bridge = EventBridge(bus)
    seen: list[tuple[str, bool]] = []
    gui_thread = QtCore.QThread.currentThread()
    bridge.notice.connect(
        lambda e: seen.append((e.message, QtCore.QThread.currentThread() is gui_thread))
    )
    worker = threading.Thread(target=lambda: bus.publish(Notice(level="info", message="hi")))
    with qtbot.waitSignal(bridge.notice, timeout=2000):
        worker.start()
    worker.join()
    assert seen == [("hi", True)]
    bridge.close()
    bus.publish(Notice(level="info", message="after close"))
    qtbot.wait(50)  # give a (wrongly) queued delivery the chance to arrive
    assert seen == [("hi", True)]


def test_bridge_never_runs_slots_inside_publish(qtbot: Any) -> None:
    bus = EventBus()
    bridge = EventBridge(bus)
    calls: list[str] = []
    bridge.any_event.connect(lambda e: calls.append(e.message))
    bus.publish(Notice(level="info", message="queued"))
    assert calls == []  # the coordinator never waits on a widget
    qtbot.waitUntil(lambda: calls == ["queued"], timeout=2000)


def test_task_runner_keeps_tasks_and_reports_failures(qtbot: Any, qloop: Any) -> None:
    runner = TaskRunner()
    results: list[int] = []

    async def ok() -> int:
        return 7

    async def boom() -> None:
        raise RuntimeError("disk on fire")

    runner.spawn(ok(), name="ok", on_done=results.append)
    assert runner.running == 1
    with qtbot.waitSignal(runner.failed, timeout=2000) as failed:
        runner.spawn(boom(), name="Clean up stale transactions")
    assert failed.args == ["Clean up stale transactions", "disk on fire"]
    qtbot.waitUntil(lambda: runner.running == 0, timeout=2000)
    assert results == [7]


def test_latency_probe_percentiles() -> None:
    probe = LatencyProbe()
    for value in [1.0] * 98 + [20.0, 50.0]:
        probe.record(value)
    summary = probe.summary()
    assert (summary.samples, summary.p50_ms, summary.p99_ms, summary.max_ms) == (
        100,
        1.0,
        20.0,
        50.0,
    )
    assert percentile([], 0.5) == 0.0


def test_latency_probe_measures_a_blocked_loop(qtbot: Any) -> None:
    import time

    probe = LatencyProbe(interval_ms=5)
    probe.start()
    qtbot.wait(30)
    QtCore.QTimer.singleShot(0, lambda: time.sleep(0.08))  # a slot that hogs the loop
    qtbot.wait(120)
    probe.stop()
    assert probe.summary().max_ms >= 60


def test_second_instance_raises_the_first(qtbot: Any, tmp_path: Path) -> None:
    name = f"r3mes-test-{tmp_path.name}"
    first = SingleInstance(name)
    assert first.claim()
    second = SingleInstance(name)
    with qtbot.waitSignal(first.activated, timeout=3000):
        assert not second.claim()
    first.release()
    third = SingleInstance(name)
    assert third.claim()
    third.release()


def test_status_bar_says_what_where_and_when(qtbot: Any) -> None:
    bar = QtWidgets.QStatusBar()
    qtbot.addWidget(bar)
    now = [100.0]
    status = StatusBarController(bar, {"chain": "http://127.0.0.1:8545"}, clock=lambda: now[0])
    status.on_retry(
        RetryScheduled(
            operation="chain.call",
            service="chain",
            attempt=2,
            delay=8.0,
            category="network",
            message="ClientConnectorError: Cannot connect: [Errno 111] Connection refused",
        )
    )
    assert status.problem_text() == (
        "Can't reach the chain RPC at http://127.0.0.1:8545: connection refused — retrying in 8 s"
    )
    now[0] += 3
    status.refresh()
    assert status.problem_text().endswith("retrying in 5 s")
    status.on_breaker(
        BreakerStateChanged(
            service="chain",
            old_state="closed",
            new_state="open",
            failure_count=5,
            seconds_until_half_open=30.0,
        )
    )
    status.set_chain_info({"network": "devnet", "block": 3, "account": "0x" + "1" * 40})
    assert (
        "retrying in 30 s" in status.problem_text()
    )  # a health poll does not hide an open breaker
    status.on_breaker(
        BreakerStateChanged(
            service="chain",
            old_state="open",
            new_state="closed",
            failure_count=0,
            seconds_until_half_open=None,
        )
    )
    assert status.problem_text() == ""
    assert status.chain.text() == "Chain: devnet · block 3 · 0x1111…1111"


def test_log_view_filters_by_level_and_search(qtbot: Any) -> None:
    model = LogModel()
    view = LogView(model)
    qtbot.addWidget(view)
    handler = QtLogHandler()
    handler.record_emitted.connect(model.append)
    logger = logging.getLogger("r3mes_desktop.test_log_view")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        logger.debug("debug detail")
        logger.info("round 3 committed")
        logger.warning("IPFS slow")
        logger.error("chain down")
        qtbot.waitUntil(lambda: len(model.lines()) == 4, timeout=2000)
    finally:
        logger.removeHandler(handler)
    assert [line.split(": ", 1)[1] for line in view.visible_lines()] == [
        "round 3 committed",
        "IPFS slow",
        "chain down",
    ]
    view.level.setCurrentText("Warning")
    assert len(view.visible_lines()) == 2
    view.search.setText("chain")
    assert [line.split(": ", 1)[1] for line in view.visible_lines()] == ["chain down"]


def test_an_active_fault_plan_stays_on_the_status_bar(qtbot: Any, qloop: Any) -> None:
    runtime = FakeRuntime(Path("."))
    window = MainWindow(runtime, tray_available=False, poll_ms=100)
    qtbot.addWidget(window)
    badge = window.status.fault_plan
    assert badge.isHidden()
    runtime.bus.publish(Notice(level="warning", message="low disk", source="disk"))
    runtime.bus.publish(
        Notice(level="warning", message="Fault plan active (ipfs 30%)", source="faults")
    )
    qtbot.waitUntil(lambda: not badge.isHidden(), timeout=3000)
    assert badge.text() == "Fault plan active"
    assert badge.toolTip() == "Fault plan active (ipfs 30%)"
    window.banner.hide()  # the banner can be dismissed; the badge stays
    assert not badge.isHidden()


def test_breakers_panel_force_open_and_reset_the_real_breaker(qtbot: Any, qloop: Any) -> None:
    runtime = FakeRuntime(Path("."))
    window = MainWindow(runtime, tray_available=False, poll_ms=100)
    qtbot.addWidget(window)
    qtbot.waitUntil(lambda: window.breakers_model.row_of("ipfs") is not None, timeout=3000)
    reset, force = window.breakers_panel.buttons["ipfs"]
    force.click()
    assert runtime.breakers.get("ipfs").snapshot().state == "forced_open"
    qtbot.waitUntil(
        lambda: window.breakers_model.row_of("ipfs").state == BreakerState.FORCED_OPEN, timeout=3000
    )
    assert "paused by you" in window.status.problem_text()
    reset.click()
    qtbot.waitUntil(
        lambda: window.breakers_model.row_of("ipfs").state == BreakerState.CLOSED, timeout=3000
    )
    assert window.status.problem_text() == ""


def test_breakers_model_counts_down_to_half_open() -> None:
    now = [10.0]
    model = BreakersModel(clock=lambda: now[0])
    model.apply_snapshots(BreakerRegistry().snapshot().values())
    assert [r.service for r in model.rows()] == ["chain", "ipfs", "task_api"]
    model.apply_event(
        BreakerStateChanged(
            service="ipfs",
            old_state="closed",
            new_state="open",
            failure_count=5,
            seconds_until_half_open=30.0,
        )
    )
    now[0] += 12
    assert model.data(model.index(1, 3)) == "18 s"
    assert model.data(model.index(1, 1)) == "Open — calls paused"
    panel = BreakersPanel(model)
    assert set(panel.buttons) == {"chain", "ipfs", "task_api"}


def test_cleanup_and_resume_sentences() -> None:
    report = CleanupReport(
        checked_at=0.0,
        older_than_s=600.0,
        cleaned=[
            {"transaction_id": "a", "new_state": "rolled_back", "unpinned": ["bafy1"]},
            {"transaction_id": "b", "new_state": "failed"},
        ],
    )
    assert describe_cleanup(report) == (
        "Cleaned up 2 stale transactions: 1 rolled back, 1 failed (unpinned 1 upload)."
    )
    assert describe_cleanup(CleanupReport(checked_at=0.0, older_than_s=600.0)) == (
        "Stale cleanup: no stale transactions found — nothing to do."
    )
    assert describe_resumable({"round_id": 3, "step": 40, "age_seconds": 720.0}) == (
        "Resume round 3 at step 40 (checkpoint 12 min old)"
    )


def test_close_goes_to_tray_only_when_a_tray_exists(qtbot: Any, qloop: Any) -> None:
    with_tray = MainWindow(FakeRuntime(Path(".")), tray_available=True)
    qtbot.addWidget(with_tray)
    with_tray.show()
    with_tray.close()
    assert not with_tray.isVisible() and with_tray.tray is not None
    assert with_tray.poll_timer.isActive()  # still mining in the tray
    with qtbot.waitSignal(with_tray.closed, timeout=1000):
        with_tray.window_actions.quit.trigger()  # Quit (tray menu) really closes
    assert not with_tray.poll_timer.isActive()
    no_tray = MainWindow(FakeRuntime(Path(".")), tray_available=False)
    qtbot.addWidget(no_tray)
    no_tray.show()
    with qtbot.waitSignal(no_tray.closed, timeout=1000):
        no_tray.close()
    assert not no_tray.poll_timer.isActive()


def test_dead_letters_retry_and_discard(qtbot: Any, qloop: Any) -> None:
    runtime = FakeRuntime(Path("."))
    runtime.coordinator.letters = [
        dead_letter("dl1", round_id=2, reason="model gone"),
        dead_letter("dl2", round_id=3, reason="round closed"),
    ]
    window = MainWindow(runtime, tray_available=False, poll_ms=100)
    qtbot.addWidget(window)
    qtbot.waitUntil(lambda: window.dead_model.rowCount() == 2, timeout=3000)
    panel = window.dead_panel
    panel.select_row(0)
    panel.retry_button.click()
    qtbot.waitUntil(lambda: window.dead_model.rowCount() == 1, timeout=3000)
    panel.select_row(0)
    panel.discard_button.click()
    qtbot.waitUntil(lambda: window.dead_model.rowCount() == 0, timeout=3000)
    assert runtime.coordinator.calls == [
        ("retry_dead_letter", "dl1"),
        ("discard_dead_letter", "dl2"),
    ]


def test_dead_letters_act_on_every_selected_letter(qtbot: Any, qloop: Any) -> None:
    runtime = FakeRuntime(Path("."))
    coordinator = runtime.coordinator
    coordinator.letters = [dead_letter(f"{i}{'0' * 11}", round_id=i) for i in range(1, 6)]
    ids = [letter.id for letter in coordinator.letters]
    commit = coordinator.retry_dead_letter

    async def retry(letter_id: str) -> TransactionStatus:
        if letter_id == ids[1]:
            raise ValueError(f"dead letter {letter_id[:3]} is not open")
        return await commit(letter_id)

    coordinator.retry_dead_letter = retry
    window = MainWindow(runtime, tray_available=False, poll_ms=100)
    qtbot.addWidget(window)
    qtbot.waitUntil(lambda: window.dead_model.rowCount() == 5, timeout=3000)
    assert window.dead_model.index(0, 0).data() == "10000000"  # the short id, as elsewhere
    panel = window.dead_panel
    reports: list[str] = []
    window.action_reported.connect(reports.append)
    panel.select_row(0)
    panel.view.selectionModel().select(
        window.dead_model.index(1, 0),
        QtCore.QItemSelectionModel.SelectionFlag.Select
        | QtCore.QItemSelectionModel.SelectionFlag.Rows,
    )
    assert panel.selected_ids() == ids[:2] and panel.retry_button.text() == "Retry 2"
    panel.retry_button.click()
    qtbot.waitUntil(lambda: any(r.startswith("Retried") for r in reports), timeout=3000)
    assert reports[-1] == (
        "Retried 1 of 2 dead letters: 1 COMMITTED; 1 could not be: dead letter 200 is not open."
    )
    qtbot.waitUntil(lambda: window.dead_model.rowCount() == 4, timeout=3000)
    panel.select_all()
    assert panel.discard_button.text() == "Discard 4"
    panel.discard_button.click()
    qtbot.waitUntil(lambda: window.dead_model.rowCount() == 0, timeout=3000)
    assert reports[-1] == "Discarded 4 of 4 dead letters."
    assert [c for c in coordinator.calls if c[0] == "discard_dead_letter"] == [
        ("discard_dead_letter", letter_id) for letter_id in ids[1:]
    ]
    assert not panel.retry_button.isEnabled() and panel.retry_button.text() == "Retry"


@pytest.mark.slow
def test_app_paints_without_importing_torch(tmp_path: Path) -> None:
    env = {
        "QT_QPA_PLATFORM": "offscreen",
        "R3MES_DATA_DIR": str(tmp_path / "data"),
        "R3MES_CONFIG_DIR": str(tmp_path / "config"),
        "PATH": "/usr/bin:/bin",
    }
    out = subprocess.run(
        [sys.executable, "-m", "r3mes_desktop", "--startup-probe"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    line = next(x for x in out.stdout.splitlines() if x.startswith("first-paint-s"))
    assert line.endswith("torch-imported False")


def test_alerts_follow_the_tray_preference(qtbot: Any) -> None:
    from r3mes_desktop.gui.widgets.banner import NoticeBanner
    from r3mes_desktop.gui.widgets.tray import AlertRouter
    from r3mes_desktop.support.alerts import Alert

    banner = NoticeBanner()
    qtbot.addWidget(banner)
    prefs = [(False, "warning")]

    class TrayStub:  # records balloons; QSystemTrayIcon cannot show them offscreen
        def __init__(self) -> None:
            self.balloons: list[str] = []

        def show_alert(self, alert: Alert) -> None:
            self.balloons.append(alert.message)

    tray = TrayStub()
    router = AlertRouter(banner, tray, preferences=lambda: prefs[0])  # type: ignore[arg-type]
    router.show(Alert(level="warning", title="Transaction rolled back", message="IPFS down"))
    assert banner.text() == "Transaction rolled back — IPFS down" and tray.balloons == []
    prefs[0] = (True, "warning")
    router.show(Alert(level="info", title="Done", message="below the threshold"))
    router.show(Alert(level="error", title="Failed", message="chain down"))
    assert tray.balloons == ["chain down"]


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_app_mines_and_quits_cleanly_on_sigterm(tmp_path: Path) -> None:
    """The real entry point end to end: window, runtime on the devnet, a commit, SIGTERM."""
    import os
    import signal

    import psutil

    env = {
        **os.environ,
        "QT_QPA_PLATFORM": "offscreen",
        "R3MES_DATA_DIR": str(tmp_path / "data"),
        "R3MES_CONFIG_DIR": str(tmp_path / "config"),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "r3mes_desktop", "--fast", "--start"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    try:
        seen = []
        for line in proc.stderr:
            seen.append(line)
            if ") committed" in line:
                break
        assert any(") committed" in line for line in seen), "".join(seen[-20:])
        workers = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=60)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, rest[-2000:]
    assert "miner stopping -> idle" in rest or "miner mining -> stopping" in rest
    _gone, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive  # no orphaned training or PoW workers
