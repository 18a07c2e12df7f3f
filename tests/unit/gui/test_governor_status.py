"""The governor's hold, in words: status bar and tray tooltip follow GovernorStateChanged
through the bridge (queued, batched), and go back to the normal text when mining may run."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from r3mes_desktop.core.events import GovernorStateChanged, RetryScheduled
from r3mes_desktop.core.governor import Decision
from r3mes_desktop.gui.main_window import MainWindow
from r3mes_desktop.gui.qt import QtWidgets
from r3mes_desktop.gui.widgets.status_bar import StatusBarController
from tests.helpers.gui_fakes import FakeRuntime

IDLE = "computer in use — resumes after 3 min idle"
HOT = "GPU 0 at 84 °C, resumes at 78 °C"


@pytest.fixture
def runtime(tmp_path: Path) -> FakeRuntime:
    return FakeRuntime(tmp_path)


@pytest.fixture
def window(qtbot: Any, qloop: Any, runtime: FakeRuntime) -> Iterator[MainWindow]:
    win = MainWindow(runtime, tray_available=True, poll_ms=60_000)
    qtbot.addWidget(win)
    win.show()
    yield win
    win.shutdown_widgets()  # with a tray, closing only hides it: stop its timers here


def _tooltip(window: MainWindow) -> str:
    assert window.tray is not None
    return str(window.tray.icon.toolTip())


def _publish_from_a_worker(runtime: FakeRuntime, event: GovernorStateChanged) -> None:
    worker = threading.Thread(target=runtime.bus.publish, args=(event,))
    worker.start()
    worker.join()


def test_a_hold_is_said_on_the_status_bar_and_the_tray_until_mining_may_run_again(
    window: MainWindow, runtime: FakeRuntime, qtbot: Any
) -> None:
    window.set_miner_state("mining")
    assert _tooltip(window) == "R3MES Desktop — mining"
    held = window.status.held
    _publish_from_a_worker(
        runtime,
        GovernorStateChanged(
            may_run=False,
            summary=f"paused: {IDLE}",
            reasons=(IDLE,),
            notes=("battery cannot be read (no battery): treated as on mains power",),
        ),
    )
    assert held.text() == ""  # queued to the GUI thread, then batched: never inside publish
    window.set_miner_state("paused")  # the governor paused the miner
    qtbot.waitUntil(lambda: held.text() == f"paused: {IDLE}", timeout=2000)
    assert held.isVisible()
    assert held.toolTip() == (
        f"paused: {IDLE}\nnote: battery cannot be read (no battery): treated as on mains power"
    )
    assert _tooltip(window) == f"R3MES Desktop — paused: {IDLE}"

    runtime.bus.publish(GovernorStateChanged(may_run=True, summary="mining allowed"))
    window.set_miner_state("mining")
    qtbot.waitUntil(lambda: not held.isVisible(), timeout=2000)
    assert held.text() == ""
    assert _tooltip(window) == "R3MES Desktop — mining"


def test_an_outage_outranks_the_hold_in_the_tray(
    window: MainWindow, runtime: FakeRuntime, qtbot: Any
) -> None:
    runtime.bus.publish(
        GovernorStateChanged(may_run=False, summary=f"paused: {IDLE}", reasons=(IDLE,))
    )
    qtbot.waitUntil(lambda: _tooltip(window) == f"R3MES Desktop — paused: {IDLE}", timeout=2000)
    runtime.bus.publish(
        RetryScheduled(
            operation="ipfs.call",
            service="ipfs",
            attempt=1,
            delay=30.0,
            category="network",
            message="ConnectionRefusedError: [Errno 111] Connection refused",
        )
    )
    qtbot.waitUntil(lambda: "Can't reach IPFS" in _tooltip(window), timeout=2000)
    assert window.status.held.text() == f"paused: {IDLE}"  # the bar says both


def test_the_decision_taken_before_the_window_listened_is_shown_at_start(
    qtbot: Any, qloop: Any, runtime: FakeRuntime
) -> None:
    runtime.governor_decision = Decision(
        may_run=False, reasons=("outside the mining hours — resumes sat 09:00",)
    )
    win = MainWindow(runtime, tray_available=True, poll_ms=60_000)
    qtbot.addWidget(win)
    win.show()
    expected = "paused: outside the mining hours — resumes sat 09:00"
    try:
        qtbot.waitUntil(lambda: win.status.held.text() == expected, timeout=2000)
        assert _tooltip(win) == f"R3MES Desktop — {expected}"
    finally:
        win.shutdown_widgets()


def test_devices_held_alone_are_named_while_the_rest_mine(
    window: MainWindow, runtime: FakeRuntime, qtbot: Any
) -> None:
    window.set_miner_state("mining")
    held = window.status.held
    runtime.bus.publish(
        GovernorStateChanged(may_run=True, summary="mining allowed", devices_held=(HOT,))
    )
    qtbot.waitUntil(lambda: held.text() == HOT, timeout=2000)
    assert held.isVisible()
    assert _tooltip(window) == f"R3MES Desktop — mining; {HOT}"
    runtime.bus.publish(
        GovernorStateChanged(
            may_run=False, summary=f"paused: {IDLE}", reasons=(IDLE,), devices_held=(HOT,)
        )
    )
    qtbot.waitUntil(lambda: held.text() == f"paused: {IDLE}; {HOT}", timeout=2000)
    assert _tooltip(window) == f"R3MES Desktop — paused: {IDLE}; {HOT}"
    runtime.bus.publish(GovernorStateChanged(may_run=True, summary="mining allowed"))
    qtbot.waitUntil(lambda: not held.isVisible(), timeout=2000)
    assert held.text() == "" and held.toolTip() == "mining allowed"
    assert _tooltip(window) == "R3MES Desktop — mining"


def test_a_decision_without_devices_held_reads_as_none_held(qtbot: Any) -> None:
    bar = QtWidgets.QStatusBar()
    qtbot.addWidget(bar)
    status = StatusBarController(bar, {})
    status.on_governor(Decision(may_run=False, reasons=(IDLE, "on battery")))
    assert status.governor_text() == f"paused: {IDLE}; on battery"
    assert status.held.text() == f"paused: {IDLE}; on battery"
