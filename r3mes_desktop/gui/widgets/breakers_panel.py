"""Circuit breakers: one row per service, state in words and colour, Reset / Force open.

Rows are fed by `BreakerStateChanged` events and by the registry's snapshots; the
half-open countdown is computed from when the figure arrived, so it ticks without polling.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from r3mes_desktop.core.events import BreakerStateChanged
from r3mes_desktop.gui.models.list_model import ListTableModel
from r3mes_desktop.gui.models.records import (
    BREAKER_COLOURS,
    BREAKER_TEXT,
    SERVICE_LABELS,
    format_seconds,
)
from r3mes_desktop.gui.qt import ModelIndex, Qt, QtCore, QtGui, QtWidgets, Signal

if TYPE_CHECKING:
    from r3mes_desktop.core.resilience.breaker import BreakerSnapshot


@dataclass
class BreakerRow:
    service: str
    state: str = "closed"  # a core.breaker.BreakerState value
    failure_count: int = 0
    half_open_at: float | None = None  # time.monotonic() when it will try again

    def wait_s(self, now: float) -> float | None:
        if self.half_open_at is None or self.state != "open":
            return None
        return max(0.0, self.half_open_at - now)


class BreakersModel(ListTableModel):
    COLUMNS = ("Service", "State", "Failures", "Half-open in", "")
    STATE_ROLE = Qt.ItemDataRole.UserRole + 1

    def __init__(self, parent: QtCore.QObject | None = None, *, clock: Any = time.monotonic):
        super().__init__(parent)
        self._now = clock

    def data(self, index: ModelIndex, role: int = 0) -> Any:
        if not index.isValid():
            return None
        row = self._rows[index.row()]
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            if col == 0:
                return SERVICE_LABELS.get(row.service, row.service)
            if col == 1:
                return BREAKER_TEXT.get(row.state, row.state)
            if col == 2:
                return str(row.failure_count)
            if col == 3:
                wait = row.wait_s(self._now())
                return "" if wait is None else format_seconds(wait)
        if role == self.STATE_ROLE:
            return row.state
        if role == Qt.ItemDataRole.ForegroundRole and col == 1:
            return QtGui.QBrush(QtGui.QColor(BREAKER_COLOURS.get(row.state, "#333")))
        if role == Qt.ItemDataRole.FontRole and col == 1:
            font = QtGui.QFont()
            font.setBold(row.state != "closed")
            return font
        return None

    def rows(self) -> list[BreakerRow]:
        return list(self._rows)

    def row_of(self, service: str) -> BreakerRow | None:
        return next((r for r in self._rows if r.service == service), None)

    def _upsert(self, service: str) -> tuple[int, BreakerRow]:
        for pos, row in enumerate(self._rows):
            if row.service == service:
                return pos, row
        pos = len(self._rows)
        self.beginInsertRows(QtCore.QModelIndex(), pos, pos)
        row = BreakerRow(service=service)
        self._rows.append(row)
        self.endInsertRows()
        return pos, row

    def _set(self, service: str, state: str, failures: int, wait: float | None) -> None:
        pos, row = self._upsert(service)
        row.state = state
        row.failure_count = failures
        row.half_open_at = None if wait is None else self._now() + float(wait)
        self.dataChanged.emit(self.index(pos, 0), self.index(pos, len(self.COLUMNS) - 1))

    def apply_event(self, event: BreakerStateChanged) -> None:
        self._set(
            event.service, event.new_state, event.failure_count, event.seconds_until_half_open
        )

    def apply_snapshots(self, snapshots: Iterable[BreakerSnapshot]) -> None:
        for snap in snapshots:
            self._set(snap.name, snap.state, snap.failure_count, snap.seconds_until_half_open)

    def tick(self) -> None:
        if self._rows:
            self.dataChanged.emit(self.index(0, 3), self.index(len(self._rows) - 1, 3))


class BreakersPanel(QtWidgets.QWidget):
    """The table plus a Reset / Force open pair on each row."""

    reset_requested = Signal(str)
    force_open_requested = Signal(str)

    def __init__(self, model: BreakersModel, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = model
        self.view = QtWidgets.QTableView()
        self.view.setModel(model)
        self.view.verticalHeader().hide()
        self.view.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.NoSelection)
        self.view.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        header = self.view.horizontalHeader()
        header.setSectionResizeMode(QtWidgets.QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QtWidgets.QHeaderView.ResizeMode.Stretch)
        self.buttons: dict[str, tuple[QtWidgets.QPushButton, QtWidgets.QPushButton]] = {}
        model.rowsInserted.connect(self._add_buttons)
        self._add_buttons()
        hint = QtWidgets.QLabel(
            "A breaker opens after repeated network failures and pauses calls to that "
            "service, then tries again (half-open). Reset closes it now; Force open pauses "
            "the service until you reset it."
        )
        hint.setWordWrap(True)
        hint.setStyleSheet("color: #555;")
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.view)
        layout.addWidget(hint)

    def _add_buttons(self, *_: Any) -> None:
        for pos, row in enumerate(self.model.rows()):
            if row.service in self.buttons:
                continue
            cell = QtWidgets.QWidget()
            box = QtWidgets.QHBoxLayout(cell)
            box.setContentsMargins(2, 0, 2, 0)
            reset = QtWidgets.QPushButton("Reset")
            reset.setObjectName(f"reset-{row.service}")
            force = QtWidgets.QPushButton("Force open")
            force.setObjectName(f"force-open-{row.service}")
            service = row.service
            reset.clicked.connect(lambda _=False, s=service: self.reset_requested.emit(s))
            force.clicked.connect(lambda _=False, s=service: self.force_open_requested.emit(s))
            box.addWidget(reset)
            box.addWidget(force)
            self.view.setIndexWidget(self.model.index(pos, 4), cell)
            self.buttons[service] = (reset, force)
        self.view.resizeColumnsToContents()
        self.view.resizeRowsToContents()
