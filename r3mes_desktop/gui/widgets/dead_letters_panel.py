"""Dead letters: permanent failures parked for a person to retry or discard."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from r3mes_desktop.gui.models.list_model import ListTableModel
from r3mes_desktop.gui.qt import ModelIndex, Qt, QtWidgets, Signal
from r3mes_desktop.support.alerts import short_id

if TYPE_CHECKING:
    from r3mes_desktop.core.records import DeadLetter


@dataclass(frozen=True)
class DeadLetterRow:
    letter_id: str
    transaction_id: str
    round_id: int
    reason: str
    created_at: float | None


def row_from_letter(letter: DeadLetter) -> DeadLetterRow:
    return DeadLetterRow(
        letter_id=letter.id,
        transaction_id=letter.transaction_id,
        round_id=letter.round_id,
        reason=letter.reason,
        created_at=letter.created_at,
    )


class DeadLettersModel(ListTableModel):
    COLUMNS = ("Transaction", "Round", "When", "Reason")
    ID_ROLE = Qt.ItemDataRole.UserRole + 1

    def data(self, index: ModelIndex, role: int = 0) -> Any:
        if not index.isValid():
            return None
        row = self._rows[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return (
                short_id(row.transaction_id),
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

    def set_letters(self, letters: Iterable[DeadLetter]) -> None:
        rows = [row_from_letter(letter) for letter in letters]
        if rows == self._rows:
            return
        self.beginResetModel()
        self._rows = rows
        self.endResetModel()

    def rows(self) -> list[DeadLetterRow]:
        return list(self._rows)


class DeadLettersPanel(QtWidgets.QWidget):
    """The letters, and Retry / Discard for every selected one (Shift/Ctrl-click, Ctrl+A):
    a chain outage can leave hundreds, and one click each is no way to clear them."""

    retry_requested = Signal(list)  # letter ids
    discard_requested = Signal(list)

    def __init__(self, model: DeadLettersModel, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = model
        self.view = QtWidgets.QTableView()
        self.view.setModel(model)
        self.view.verticalHeader().hide()
        self.view.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.ExtendedSelection)
        self.view.horizontalHeader().setStretchLastSection(True)
        self.empty = QtWidgets.QLabel("No dead letters: nothing failed for good.")
        self.empty.setStyleSheet("color: #555;")
        self.retry_button = QtWidgets.QPushButton("Retry")
        self.retry_button.setObjectName("dead-letter-retry")
        self.discard_button = QtWidgets.QPushButton("Discard")
        self.discard_button.setObjectName("dead-letter-discard")
        hint = "Acts on every selected letter (Shift- or Ctrl-click, Ctrl+A: several)"
        for button in (self.retry_button, self.discard_button):
            button.setToolTip(hint)
        self.retry_button.clicked.connect(lambda: self._emit(self.retry_requested))
        self.discard_button.clicked.connect(lambda: self._emit(self.discard_requested))
        buttons = QtWidgets.QHBoxLayout()
        buttons.addWidget(self.empty)
        buttons.addStretch(1)  # the buttons stay their size, at the right
        buttons.addWidget(self.retry_button)
        buttons.addWidget(self.discard_button)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.view)
        layout.addLayout(buttons)
        model.modelReset.connect(self._update_buttons)
        self.view.selectionModel().selectionChanged.connect(self._update_buttons)
        self._update_buttons()

    def selected_ids(self) -> list[str]:
        rows = sorted(self.view.selectionModel().selectedRows(), key=lambda i: i.row())
        return [str(self.model.data(index, DeadLettersModel.ID_ROLE)) for index in rows]

    def select_row(self, pos: int) -> None:
        self.view.selectRow(pos)

    def select_all(self) -> None:
        self.view.selectAll()

    def _emit(self, signal: Any) -> None:
        letters = self.selected_ids()
        if letters:
            signal.emit(letters)

    def _update_buttons(self, *_: Any) -> None:
        count = len(self.selected_ids())
        suffix = f" {count}" if count > 1 else ""
        self.retry_button.setText(f"Retry{suffix}")
        self.discard_button.setText(f"Discard{suffix}")
        self.retry_button.setEnabled(count > 0)
        self.discard_button.setEnabled(count > 0)
        self.empty.setVisible(self.model.rowCount() == 0)
