"""In-window notice banner: where there is no system tray, notices show up here.

Keeps the last few alerts (newest first) so a grouped message is not lost under the next
one; the user dismisses them all at once.
"""

from __future__ import annotations

from r3mes_desktop.gui.qt import QtWidgets, Signal
from r3mes_desktop.support.alerts import Alert, severity_rank

_STYLES = {
    0: "background: #e3f2fd; border: 1px solid #90caf9; color: #0d47a1;",
    1: "background: #fff3e0; border: 1px solid #ffb74d; color: #6d3a00;",
    2: "background: #ffebee; border: 1px solid #ef9a9a; color: #8e0000;",
}


class NoticeBanner(QtWidgets.QFrame):
    dismissed = Signal()

    def __init__(self, parent: QtWidgets.QWidget | None = None, *, keep: int = 3) -> None:
        super().__init__(parent)
        self.setObjectName("notice-banner")
        self._keep = keep
        self._alerts: list[Alert] = []
        self.label = QtWidgets.QLabel()
        self.label.setWordWrap(True)
        self.label.setObjectName("notice-banner-text")
        close = QtWidgets.QToolButton()
        close.setText("Dismiss")
        close.setObjectName("notice-banner-dismiss")
        close.clicked.connect(self.dismiss)
        layout = QtWidgets.QHBoxLayout(self)
        layout.setContentsMargins(10, 6, 6, 6)
        layout.addWidget(self.label, 1)
        layout.addWidget(close)
        self.hide()

    def show_alert(self, alert: Alert) -> None:
        self._alerts.insert(0, alert)
        del self._alerts[self._keep :]
        worst = min(2, max(severity_rank(a.level) for a in self._alerts))
        self.setStyleSheet(f"#notice-banner {{ {_STYLES[worst]} border-radius: 4px; }}")
        self.label.setText(
            "<br>".join(f"<b>{a.title}</b> — {_escape(a.message)}" for a in self._alerts)
        )
        self.show()

    def alerts(self) -> list[Alert]:
        return list(self._alerts)

    def text(self) -> str:
        return "\n".join(f"{a.title} — {a.message}" for a in self._alerts)

    def dismiss(self) -> None:
        self._alerts.clear()
        self.hide()
        self.dismissed.emit()


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
