"""`r3mes-desktop --minimised` (the start-at-login entry): hidden in the tray, or minimised."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from r3mes_desktop.core.events import EventBus
from r3mes_desktop.gui.app import _parse, _Starting, show_window
from r3mes_desktop.gui.main_window import MainWindow


def test_flag_parsed_in_both_spellings() -> None:
    assert _parse(["--minimised"]).minimised
    assert _parse(["--minimized"]).minimised
    assert not _parse([]).minimised


@pytest.mark.parametrize("tray", [True, False])
def test_window_shown_normally_without_the_flag(qtbot: Any, tray: bool) -> None:
    window = MainWindow(_Starting(EventBus()), tray_available=tray)
    qtbot.addWidget(window)
    try:
        assert show_window(window, minimised=False)
        assert window.isVisible() and not window.isMinimized()
    finally:
        window.shutdown_widgets()


def test_minimised_with_a_tray_stays_hidden(qtbot: Any, caplog: Any) -> None:
    window = MainWindow(_Starting(EventBus()), tray_available=True)
    qtbot.addWidget(window)
    try:
        with caplog.at_level(logging.INFO, logger="r3mes_desktop.gui.app"):
            assert not show_window(window, minimised=True)
        assert window.tray is not None and not window.isVisible()
        assert "in the system tray" in caplog.text
    finally:
        window.shutdown_widgets()


def test_minimised_without_a_tray_is_minimised_and_says_why(qtbot: Any, caplog: Any) -> None:
    window = MainWindow(_Starting(EventBus()), tray_available=False)
    qtbot.addWidget(window)
    try:
        with caplog.at_level(logging.INFO, logger="r3mes_desktop.gui.app"):
            assert not show_window(window, minimised=True)
        assert window.isVisible() and window.isMinimized()
        assert "no system tray is available" in caplog.text
    finally:
        window.shutdown_widgets()
