"""System tray: status icon, a small menu, and where alerts go.

`AlertRouter` decides where an alert is shown: a tray balloon when a tray exists, the
in-window banner otherwise (Xvfb, offscreen, some Wayland desktops). The decision is made
once, from `QSystemTrayIcon.isSystemTrayAvailable()`, and close-to-tray follows it.
"""

from __future__ import annotations

from collections.abc import Callable

from r3mes_desktop.gui.qt import QtGui, QtWidgets
from r3mes_desktop.gui.widgets.banner import NoticeBanner
from r3mes_desktop.gui.widgets.icons import status_icon
from r3mes_desktop.support.alerts import Alert, severity_rank


class Tray:
    """The tray icon and its menu (show/hide, start/pause, finish then stop, quit)."""

    def __init__(
        self,
        window: QtWidgets.QWidget,
        *,
        start_pause: QtGui.QAction,
        finish: QtGui.QAction,
        quit_action: QtGui.QAction,
    ) -> None:
        self.window = window
        self.icon = QtWidgets.QSystemTrayIcon(status_icon("idle"), window)
        self.icon.setToolTip("R3MES Desktop — idle")
        menu = QtWidgets.QMenu(window)
        self.show_hide = menu.addAction("Hide window")
        self.show_hide.triggered.connect(self.toggle_window)
        menu.addSeparator()
        menu.addAction(start_pause)
        menu.addAction(finish)
        menu.addSeparator()
        menu.addAction(quit_action)
        menu.aboutToShow.connect(self._sync_label)
        self.menu = menu
        self.icon.setContextMenu(menu)
        self.icon.activated.connect(self._activated)
        self.icon.show()

    def _sync_label(self) -> None:
        self.show_hide.setText("Hide window" if self.window.isVisible() else "Show window")

    def _activated(self, reason: QtWidgets.QSystemTrayIcon.ActivationReason) -> None:
        if reason == QtWidgets.QSystemTrayIcon.ActivationReason.Trigger:
            self.toggle_window()

    def toggle_window(self) -> None:
        if self.window.isVisible():
            self.window.hide()
        else:
            self.window.showNormal()
            self.window.raise_()
            self.window.activateWindow()

    def set_status(self, status: str, detail: str) -> None:
        self.icon.setIcon(status_icon(status))
        self.icon.setToolTip(f"R3MES Desktop — {detail}")

    def show_alert(self, alert: Alert) -> None:
        icon = (
            QtWidgets.QSystemTrayIcon.MessageIcon.Critical
            if severity_rank(alert.level) >= 2
            else QtWidgets.QSystemTrayIcon.MessageIcon.Warning
            if severity_rank(alert.level) == 1
            else QtWidgets.QSystemTrayIcon.MessageIcon.Information
        )
        self.icon.showMessage(alert.title, alert.message, icon, 8000)


class AlertRouter:
    """Tray balloon if there is a tray and the user wants tray notifications (at or above
    their minimum severity), else the in-window banner. Keeps the last 50 it showed."""

    def __init__(
        self,
        banner: NoticeBanner,
        tray: Tray | None,
        *,
        preferences: Callable[[], tuple[bool, str]] = lambda: (True, "info"),
    ) -> None:
        self.banner = banner
        self.tray = tray
        self.preferences = preferences  # (tray notifications on, minimum severity)
        self.shown: list[Alert] = []

    def show(self, alert: Alert) -> None:
        self.shown.append(alert)
        del self.shown[:-50]
        use_tray, min_severity = self.preferences()
        if self.tray is None or not use_tray:
            self.banner.show_alert(alert)
        elif severity_rank(alert.level) >= severity_rank(min_severity):
            self.tray.show_alert(alert)
