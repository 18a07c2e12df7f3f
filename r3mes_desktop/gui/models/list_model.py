"""The flat table model the small panels share: a list of rows under fixed column titles."""

from __future__ import annotations

from typing import Any, ClassVar

from r3mes_desktop.gui.qt import ModelIndex, Qt, QtCore


class ListTableModel(QtCore.QAbstractTableModel):
    """Rows in `self._rows`, titles in `COLUMNS`; subclasses only say what a cell shows."""

    COLUMNS: ClassVar[tuple[str, ...]] = ()

    def __init__(self, parent: QtCore.QObject | None = None) -> None:
        super().__init__(parent)
        self._rows: list[Any] = []

    def rowCount(self, parent: ModelIndex | None = None) -> int:
        return 0 if parent is not None and parent.isValid() else len(self._rows)

    def columnCount(self, parent: ModelIndex | None = None) -> int:
        return 0 if parent is not None and parent.isValid() else len(self.COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = 0) -> Any:
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return self.COLUMNS[section]
        return None
