"""The log pane hangs off the redacting log queue: no secret in clear, rows on the GUI thread."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from r3mes_desktop.gui.qt import QtCore
from r3mes_desktop.gui.widgets.log_view import LogModel, QtLogHandler
from r3mes_desktop.support import logs
from r3mes_desktop.support.redact import SECRETS, register_secret

SECRET = "pane-Secret-value-0042"


def test_log_pane_gets_redacted_records_on_the_gui_thread(qtbot: Any, tmp_path: Path) -> None:
    model = LogModel()
    model.flush_timer.setInterval(0)
    pane = QtLogHandler()
    appended_on: list[QtCore.QThread] = []

    def append(line: Any) -> None:
        appended_on.append(QtCore.QThread.currentThread())
        model.append(line)

    pane.record_emitted.connect(append)
    register_secret(SECRET)
    logs.setup_logging(directory=tmp_path, console=False)
    logs.attach_handler(pane)
    log = logging.getLogger("r3mes_desktop.pane_test")
    try:
        log.warning("unlocking with %s", SECRET)

        def from_a_worker() -> None:
            try:
                raise ValueError(f"bad key {SECRET}")
            except ValueError:
                log.exception("worker failed")

        worker = threading.Thread(target=from_a_worker)
        worker.start()
        worker.join(5)
        qtbot.waitUntil(lambda: len(model.lines()) == 2, timeout=5000)
    finally:
        logs.teardown_logging()
        SECRETS.forget_all()
    texts = [line.text() for line in model.lines()]
    assert not [t for t in texts if SECRET in t]
    assert texts[0].endswith("unlocking with [REDACTED]")
    assert texts[1].endswith("worker failed — ValueError: bad key [REDACTED]")
    gui = QtCore.QCoreApplication.instance().thread()  # type: ignore[union-attr]
    assert appended_on == [gui, gui]
