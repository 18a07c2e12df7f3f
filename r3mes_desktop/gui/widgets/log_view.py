"""Log view: a logging.Handler that forwards records to Qt, and a filterable list.

In the app the handler hangs off the log queue (`logs.attach_handler`): records arrive
already redacted, on the queue's listener thread; the handler only emits a signal, which Qt
queues onto the GUI thread. The model appends in batches on a timer so a
burst of log lines costs one layout pass.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from r3mes_desktop.gui.qt import ModelIndex, Qt, QtCore, QtGui, QtWidgets, Signal
from r3mes_desktop.support.redact import redact

LEVELS = {"Debug": logging.DEBUG, "Info": logging.INFO, "Warning": logging.WARNING}
LEVELS["Error"] = logging.ERROR
LEVEL_COLOURS = {logging.WARNING: "#b26a00", logging.ERROR: "#c62828", logging.CRITICAL: "#c62828"}


@dataclass(frozen=True)
class LogLine:
    created: float
    level: int
    name: str
    message: str

    def text(self) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(self.created))
        return f"{stamp} {logging.getLevelName(self.level):<7} {self.name}: {self.message}"


class _Relay(QtCore.QObject):
    record_emitted = Signal(object)


class QtLogHandler(logging.Handler):
    """Forwards each record as `relay.record_emitted(LogLine)`; safe from any thread.

    The signal lives on a small QObject owned by the handler (composition keeps
    logging.Handler's and QObject's constructors apart).
    """

    def __init__(self, level: int = logging.DEBUG) -> None:
        super().__init__(level)
        self.relay = _Relay()

    @property
    def record_emitted(self) -> Any:
        return self.relay.record_emitted

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_text:  # redacted by the log queue; its last line names the error
                message += f" — {record.exc_text.rstrip().splitlines()[-1]}"
            elif record.exc_info and record.exc_info[1] is not None:
                error = record.exc_info[1]
                message += redact(f" — {type(error).__name__}: {error}")
            self.relay.record_emitted.emit(
                LogLine(record.created, record.levelno, record.name, message)
            )
        except Exception:
            self.handleError(record)


class LogModel(QtCore.QAbstractListModel):
    LEVEL_ROLE = Qt.ItemDataRole.UserRole + 1

    def __init__(self, parent: QtCore.QObject | None = None, *, max_lines: int = 5000) -> None:
        super().__init__(parent)
        self._lines: list[LogLine] = []
        self._pending: list[LogLine] = []
        self._max = max_lines
        self.flush_timer = QtCore.QTimer(self)
        self.flush_timer.setObjectName("log-flush")
        self.flush_timer.setInterval(200)
        self.flush_timer.setSingleShot(True)
        self.flush_timer.timeout.connect(self.flush)

    def rowCount(self, parent: ModelIndex | None = None) -> int:
        return 0 if parent is not None and parent.isValid() else len(self._lines)

    def data(self, index: ModelIndex, role: int = 0) -> Any:
        if not index.isValid():
            return None
        line = self._lines[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return line.text()
        if role == self.LEVEL_ROLE:
            return line.level
        if role == Qt.ItemDataRole.ForegroundRole and line.level in LEVEL_COLOURS:
            return QtGui.QBrush(QtGui.QColor(LEVEL_COLOURS[line.level]))
        return None

    def append(self, line: LogLine) -> None:
        self._pending.append(line)
        if not self.flush_timer.isActive():
            self.flush_timer.start()

    def flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        overflow = len(self._lines) + len(pending) - self._max
        if overflow > 0:
            drop = min(overflow, len(self._lines))
            self.beginRemoveRows(QtCore.QModelIndex(), 0, drop - 1)
            del self._lines[:drop]
            self.endRemoveRows()
            pending = pending[-self._max :]
        start = len(self._lines)
        self.beginInsertRows(QtCore.QModelIndex(), start, start + len(pending) - 1)
        self._lines.extend(pending)
        self.endInsertRows()

    def lines(self) -> list[LogLine]:
        return list(self._lines)


class LogFilter(QtCore.QSortFilterProxyModel):
    def __init__(self, parent: QtCore.QObject | None = None) -> None:
        super().__init__(parent)
        self._min_level = logging.INFO
        self._needle = ""

    def set_min_level(self, level: int) -> None:
        self.beginFilterChange()
        self._min_level = level
        self.endFilterChange()

    def set_search(self, text: str) -> None:
        self.beginFilterChange()
        self._needle = text.strip().lower()
        self.endFilterChange()

    def filterAcceptsRow(self, source_row: int, source_parent: ModelIndex) -> bool:
        model = self.sourceModel()
        index = model.index(source_row, 0, source_parent)
        if (model.data(index, LogModel.LEVEL_ROLE) or 0) < self._min_level:
            return False
        return not self._needle or self._needle in str(model.data(index)).lower()


class LogView(QtWidgets.QWidget):
    """Level combo + search box over the log list; follows the tail unless scrolled up."""

    def __init__(self, model: LogModel, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = model
        self.proxy = LogFilter(self)
        self.proxy.setSourceModel(model)
        self.level = QtWidgets.QComboBox()
        self.level.addItems(list(LEVELS))
        self.level.setCurrentText("Info")
        self.level.currentTextChanged.connect(lambda t: self.proxy.set_min_level(LEVELS[t]))
        self.search = QtWidgets.QLineEdit()
        self.search.setPlaceholderText("Search the log…")
        self.search.setClearButtonEnabled(True)
        self.search.textChanged.connect(self.proxy.set_search)
        self.list = QtWidgets.QListView()
        self.list.setModel(self.proxy)
        self.list.setUniformItemSizes(True)
        self.list.setAlternatingRowColors(True)
        self.list.setFont(QtGui.QFontDatabase.systemFont(QtGui.QFontDatabase.SystemFont.FixedFont))
        self.list.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.proxy.rowsInserted.connect(self._follow)

        top = QtWidgets.QHBoxLayout()
        top.addWidget(QtWidgets.QLabel("Level:"))
        top.addWidget(self.level)
        top.addWidget(self.search, 1)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addWidget(self.list)

    def _follow(self) -> None:
        bar = self.list.verticalScrollBar()
        if bar.value() >= bar.maximum() - 3:
            self.list.scrollToBottom()

    def visible_lines(self) -> list[str]:
        return [str(self.proxy.data(self.proxy.index(r, 0))) for r in range(self.proxy.rowCount())]
