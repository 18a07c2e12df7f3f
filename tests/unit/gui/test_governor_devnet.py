"""The real governor in the real window: a program on the "pause while" list holds mining
back, the status bar and the tray say so, and mining resumes when the program exits."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from r3mes_desktop.app.runtime import Runtime, RuntimeOptions
from r3mes_desktop.core.txstate import TxState
from r3mes_desktop.gui.main_window import MainWindow

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

WAIT_MS = 90_000
PROGRAM = f"r3hold{os.getpid() % 100000}"  # the process list's name (15 characters at most)


@pytest.fixture
def program(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A running process the process list names PROGRAM (a link to sleep)."""
    sleep = shutil.which("sleep")
    if sleep is None:
        pytest.skip("no sleep(1) on PATH")
    link = tmp_path / PROGRAM
    link.symlink_to(sleep)
    process = subprocess.Popen([str(link), "300"])
    try:
        yield process
    finally:
        process.kill()
        process.wait()


def test_a_hold_by_the_real_governor_is_said_and_lifted(
    qtbot: Any,
    qloop: Any,
    arun: Any,
    tmp_path: Path,
    monkeypatch: Any,
    program: subprocess.Popen[bytes],
) -> None:
    monkeypatch.setenv("R3MES_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("R3MES_CONFIG_DIR", str(tmp_path / "config"))
    runtime = Runtime(
        options=RuntimeOptions.fast(
            settings_overrides={"pow_difficulty": 16, "governor_pause_while": (PROGRAM,)}
        )
    )
    window = MainWindow(runtime, tray_available=True, poll_ms=500)
    qtbot.addWidget(window)
    window.show()
    try:
        arun(runtime.open(), timeout=120)
        window.runtime_ready()
        window.window_actions.start.trigger()
        held = window.status.held
        expected = f"paused: {PROGRAM} is running — resumes when it exits"
        qtbot.waitUntil(lambda: held.text() == expected, timeout=WAIT_MS)
        assert held.isVisible()
        assert window.tray is not None
        qtbot.waitUntil(
            lambda: window.tray.icon.toolTip() == f"R3MES Desktop — {expected}", timeout=2000
        )
        assert not any(r.state == TxState.COMMITTED for r in window.tx_model.rows())

        program.kill()
        program.wait()
        qtbot.waitUntil(lambda: not held.isVisible(), timeout=WAIT_MS)
        qtbot.waitUntil(
            lambda: any(r.state == TxState.COMMITTED for r in window.tx_model.rows()),
            timeout=WAIT_MS,
        )
        qtbot.waitUntil(
            lambda: window.tray.icon.toolTip() == "R3MES Desktop — mining", timeout=WAIT_MS
        )
        assert held.text() == ""
    finally:
        window.shutdown_widgets()
        arun(window.tasks.cancel_all(), timeout=30)
        arun(runtime.close(), timeout=60)
