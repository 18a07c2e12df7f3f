"""Dead letters: permanent failures parked for a person to retry or discard."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from r3mes_desktop.gui.list_model import ListTableModel
from r3mes_desktop.gui.qt import Qt, QtCore, QtWidgets, Signal
from r3mes_desktop.gui.records import field_of


@dataclass(frozen=True)
class DeadLetterRow:
    letter_id: str
    transaction_id: str
    round_id: Any
    reason: str
    created_at: float | None


def row_from_letter(letter: Any) -> DeadLetterRow:
    letter_id = field_of(letter, "id", "dead_letter_id", "letter_id", "transaction_id")
    return DeadLetterRow(
        letter_id=str(letter_id),
        transaction_id=str(field_of(letter, "transaction_id", default=letter_id)),
        round_id=field_of(letter, "round_id", default=""),
        reason=str(field_of(letter, "reason", "error_message", "message", default="")),
        created_at=field_of(letter, "created_at", "ts", "at"),
    )


class DeadLettersModel(ListTableModel):
    COLUMNS = ("Transaction", "Round", "When", "Reason")
    ID_ROLE = Qt.ItemDataRole.UserRole + 1

    def data(self, index: QtCore.QModelIndex, role: int = 0) -> Any:
        if not index.isValid():
            return None
        row = self._rows[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return (
                row.transaction_id[:8],
                str(row.round_id),
                time.strftime("%d %b %H:%M", time.localtime(row.created_at))
                if row.created_at
                else "",
                row.reason.splitlines()[0] if row.reason else "",
            )[index.column()]
        if role == Qt.ItemDataRole.ToolTipRole:
            return f"{row.transaction_id}\n{row.reason}"
        if role == self.ID_ROLE:
            return row.letter_id
        return None

    def set_letters(self, letters: Iterable[Any]) -> None:
        rows = [row_from_letter(letter) for letter in letters]
        if rows == self._rows:
            return
        self.beginResetModel()
        self._rows = rows
        self.endResetModel()

    def rows(self) -> list[DeadLetterRow]:
        return list(self._rows)


class DeadLettersPanel(QtWidgets.QWidget):
    retry_requested = Signal(str)
    discard_requested = Signal(str)

    def __init__(self, model: DeadLettersModel, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = model
        self.view = QtWidgets.QTableView()
        self.view.setModel(model)
        self.view.verticalHeader().hide()
        self.view.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.SingleSelection)
        self.view.horizontalHeader().setStretchLastSection(True)
        self.empty = QtWidgets.QLabel("No dead letters: nothing failed for good.")
        self.empty.setStyleSheet("color: #555;")
        self.retry_button = QtWidgets.QPushButton("Retry")
        self.retry_button.setObjectName("dead-letter-retry")
        self.discard_button = QtWidgets.QPushButton("Discard")
        self.discard_button.setObjectName("dead-letter-discard")
        self.retry_button.clicked.connect(lambda: self._emit(self.retry_requested))
        self.discard_button.clicked.connect(lambda: self._emit(self.discard_requested))
        buttons = QtWidgets.QHBoxLayout()
        buttons.addWidget(self.empty, 1)
        buttons.addWidget(self.retry_button)
        buttons.addWidget(self.discard_button)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.view)
        layout.addLayout(buttons)
        model.modelReset.connect(self._update_buttons)
        self.view.selectionModel().selectionChanged.connect(self._update_buttons)
        self._update_buttons()

    def selected_id(self) -> str | None:
        rows = self.view.selectionModel().selectedRows()
        if not rows:
            return None
        return str(self.model.data(rows[0], DeadLettersModel.ID_ROLE))

    def select_row(self, pos: int) -> None:
        self.view.selectRow(pos)

    def _emit(self, signal: Any) -> None:
        letter = self.selected_id()
        if letter is not None:
            signal.emit(letter)

    def _update_buttons(self, *_: Any) -> None:
        has = self.selected_id() is not None
        self.retry_button.setEnabled(has)
        self.discard_button.setEnabled(has)
        self.empty.setVisible(self.model.rowCount() == 0)
