"""Transactions table: a Qt model over rows kept up to date from core events.

Rows come from two sources: the coordinator's `list_transactions()` snapshot (authoritative,
polled) and the bridge's events in between (state changes, step progress, retries), so the
table moves as the saga moves without querying the journal per event. Ages and retry
countdowns tick once a second via `tick()`, which asks the views for a repaint only.

`data()` runs in Python for every visible cell and every role a delegate asks for (about
ten per cell per paint), so roles the model does not answer are turned away first.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from r3mes_desktop.core.events import (
    CompensationDone,
    CompensationFailed,
    Event,
    RetryScheduled,
    StepProgress,
    TransactionStateChanged,
    VerdictRecorded,
)
from r3mes_desktop.core.txstate import STEPS, TERMINAL, TxState
from r3mes_desktop.gui.models.list_model import ListTableModel
from r3mes_desktop.gui.models.tx_rows import (
    PROGRESS_STEP,
    STATE_COLOURS,
    TERMINAL_STATES,
    VERDICT_COLOURS,
    TxRow,
    describe_event,
    row_from_status,
    shown_fields,
    stamp,
    state_label,
)
from r3mes_desktop.gui.qt import ModelIndex, Qt, QtCore, QtGui

if TYPE_CHECKING:
    from r3mes_desktop.core.records import TransactionStatus

__all__ = ["STATE_FILTERS", "TERMINAL_STATES", "TransactionsFilter", "TransactionsModel", "TxRow"]


class TransactionsModel(ListTableModel):
    COLUMNS = (
        "ID",
        "Round",
        "State",
        "Verdict",
        "Age",
        "Attempts",
        "Next retry",
        "Failed step",
        "Error",
    )
    (
        COL_ID,
        COL_ROUND,
        COL_STATE,
        COL_VERDICT,
        COL_AGE,
        COL_ATTEMPTS,
        COL_RETRY,
        COL_FAILED,
        COL_ERROR,
    ) = range(9)
    SORT_ROLE = Qt.ItemDataRole.UserRole + 1
    STATE_ROLE = Qt.ItemDataRole.UserRole + 2
    ID_ROLE = Qt.ItemDataRole.UserRole + 3
    _DISPLAY = int(Qt.ItemDataRole.DisplayRole)
    _TOOLTIP = int(Qt.ItemDataRole.ToolTipRole)
    _FOREGROUND = int(Qt.ItemDataRole.ForegroundRole)
    _ROLES = frozenset(
        {_DISPLAY, _TOOLTIP, _FOREGROUND, int(SORT_ROLE), int(STATE_ROLE), int(ID_ROLE)}
    )
    ticked = QtCore.Signal()
    """Once a second while there are rows: ages and countdowns changed; repaint them."""

    def __init__(
        self, parent: QtCore.QObject | None = None, *, clock: Any = time.time, max_rows: int = 2000
    ) -> None:
        super().__init__(parent)
        self._rows: list[TxRow] = []
        self._index: dict[str, int] = {}
        self._now = clock
        self._max_rows = max_rows
        # Changed rows are signalled together, at most every 100 ms: training progress
        # arrives many times a second and each dataChanged makes the proxy re-sort.
        self._dirty: set[str] = set()
        self.flush_timer = QtCore.QTimer(self)
        self.flush_timer.setObjectName("transactions-flush")
        self.flush_timer.setSingleShot(True)
        self.flush_timer.setInterval(100)
        self.flush_timer.timeout.connect(self.flush)

    # -- Qt model API (rows, columns and titles come from ListTableModel) ------------------
    def data(self, index: ModelIndex, role: int = 0) -> Any:
        role = int(role)
        if role not in self._ROLES:
            return None  # decoration, font, alignment, ...: most calls end here
        pos = index.row()
        if not 0 <= pos < len(self._rows) or not index.isValid():
            return None
        row = self._rows[pos]
        col = index.column()
        if role == self._DISPLAY:
            return self._display(row, col)
        if role == self.SORT_ROLE:
            return self._sort_key(row, col)
        if role == self.STATE_ROLE:
            return row.state
        if role == self.ID_ROLE:
            return row.transaction_id
        if role == self._TOOLTIP:
            if col == self.COL_ERROR and row.error_message:
                cat = f"[{row.error_category}] " if row.error_category else ""
                step = state_label(row.failed_step) if row.failed_step else ""
                return f"{cat}{step}\n{row.error_message}"
            if col == self.COL_ID:
                return row.transaction_id
            if col == self.COL_STATE:
                return row.state_text()
            if col == self.COL_VERDICT:
                return verdict_tooltip(row)
        if role == self._FOREGROUND and col in (self.COL_STATE, self.COL_VERDICT):
            colour = (
                STATE_COLOURS.get(row.state)
                if col == self.COL_STATE
                else VERDICT_COLOURS.get(row.verdict or "")
            )
            return QtGui.QBrush(QtGui.QColor(colour)) if colour else None
        return None

    def _display(self, row: TxRow, col: int) -> str:
        now = self._now()
        if col == self.COL_ID:
            return row.short_id
        if col == self.COL_ROUND:
            return "" if row.round_id is None else str(row.round_id)
        if col == self.COL_STATE:
            return row.state_text()
        if col == self.COL_VERDICT:
            return row.verdict_text()
        if col == self.COL_AGE:
            return row.age_text(now)
        if col == self.COL_ATTEMPTS:
            return str(row.attempts)
        if col == self.COL_RETRY:
            if row.next_retry_at is None or row.state in TERMINAL:
                return ""
            return f"in {max(0.0, row.next_retry_at - now):.0f} s"
        if col == self.COL_FAILED:
            return state_label(row.failed_step) if row.failed_step else ""
        if col == self.COL_ERROR:
            return (row.error_message or "").splitlines()[0][:120] if row.error_message else ""
        return ""

    def _sort_key(self, row: TxRow, col: int) -> Any:
        if col == self.COL_ROUND:
            return row.round_id if row.round_id is not None else -1
        if col == self.COL_AGE:
            return float("inf") if row.created_at is None else self._now() - row.created_at
        if col == self.COL_ATTEMPTS:
            return row.attempts
        if col == self.COL_RETRY:
            return row.next_retry_at if row.next_retry_at is not None else float("inf")
        return self._display(row, col)

    # -- updates ------------------------------------------------------------------------
    def row(self, transaction_id: str) -> TxRow | None:
        pos = self._index.get(transaction_id)
        return None if pos is None else self._rows[pos]

    def rows(self) -> list[TxRow]:
        return list(self._rows)

    def _ensure(self, transaction_id: str, **fields: Any) -> TxRow:
        pos = self._index.get(transaction_id)
        if pos is not None:
            return self._rows[pos]
        if len(self._rows) >= self._max_rows:
            self._drop_oldest_terminal()
        row = TxRow(transaction_id=transaction_id, **fields)
        pos = len(self._rows)
        self.beginInsertRows(QtCore.QModelIndex(), pos, pos)
        self._rows.append(row)
        self._index[transaction_id] = pos
        self.endInsertRows()
        return row

    def _drop_oldest_terminal(self) -> None:
        for pos, row in enumerate(self._rows):
            if row.state in TERMINAL:
                self.beginRemoveRows(QtCore.QModelIndex(), pos, pos)
                del self._rows[pos]
                self.endRemoveRows()
                self._index = {r.transaction_id: i for i, r in enumerate(self._rows)}
                return

    def _changed(self, transaction_id: str) -> None:
        self._dirty.add(transaction_id)
        if not self.flush_timer.isActive():
            self.flush_timer.start()

    def flush(self) -> None:
        """Signal every row changed since the last flush, as one span."""
        positions = [self._index[t] for t in self._dirty if t in self._index]
        self._dirty.clear()
        if positions:
            top, bottom = min(positions), max(positions)
            self.dataChanged.emit(self.index(top, 0), self.index(bottom, len(self.COLUMNS) - 1))

    def apply_event(self, event: Event) -> None:
        """Fold one core event into the table (called by the window from bridge signals)."""
        if isinstance(event, TransactionStateChanged):
            old = None if event.old_state is None else TxState(event.old_state)
            new = TxState(event.new_state)
            started = event.ts if old is None else None
            row = self._ensure(event.transaction_id, round_id=event.round_id, created_at=started)
            if old in STEPS and new != old and new not in (TxState.FAILED, TxState.ROLLED_BACK):
                row.progress[old] = 1.0
            if new in STEPS:
                row.progress.setdefault(new, 0.0)
            row.state = new
            row.round_id = event.round_id
            if event.failed_step:
                row.failed_step = event.failed_step
            if event.error_message:
                row.error_message = event.error_message
                row.error_category = event.error_category
            if new in TERMINAL:
                row.next_retry_at = None
                if row.created_at is not None:
                    row.duration_s = max(0.0, event.ts - row.created_at)
            if new is TxState.COMMITTED and row.verdict is None:
                row.verdict = "awaiting"  # until the validators' verdict is read
            row.history.append(stamp(event) + describe_event(event))
            self._changed(row.transaction_id)
        elif isinstance(event, StepProgress):
            row = self._ensure(event.transaction_id)
            step = PROGRESS_STEP.get(event.step)
            if step is not None and event.step != "pow":
                row.progress[step] = max(0.0, min(1.0, event.fraction))
                self._changed(row.transaction_id)
        elif isinstance(event, RetryScheduled) and event.transaction_id:
            row = self._ensure(event.transaction_id)
            row.attempts = max(row.attempts, event.attempt)
            row.next_retry_at = event.ts + event.delay
            row.history.append(stamp(event) + describe_event(event))
            self._changed(row.transaction_id)
        elif isinstance(event, CompensationDone | CompensationFailed):
            row = self._ensure(event.transaction_id)
            row.history.append(stamp(event) + describe_event(event))
            self._changed(row.transaction_id)
        elif isinstance(event, VerdictRecorded):
            row = self._ensure(event.transaction_id, round_id=event.round_id)
            row.verdict = event.verdict
            row.credits = event.credits
            row.verdict_reason = event.reason_text
            row.verdict_validator = event.validator
            row.history.append(stamp(event) + describe_event(event))
            self._changed(row.transaction_id)

    def replace_from_snapshot(self, statuses: Iterable[TransactionStatus]) -> None:
        """Merge the coordinator's records: they win over what events suggested."""
        for status in statuses:
            fresh = row_from_status(status)
            existing = self.row(fresh.transaction_id)
            if existing is None:
                pos = len(self._rows)
                self.beginInsertRows(QtCore.QModelIndex(), pos, pos)
                self._rows.append(fresh)
                self._index[fresh.transaction_id] = pos
                self.endInsertRows()
                continue
            history = existing.history if not fresh.history else fresh.history
            progress = {**existing.progress, **fresh.progress}
            if fresh.next_retry_at is None and fresh.state not in TERMINAL:
                fresh.next_retry_at = existing.next_retry_at
            fresh.history = history
            fresh.progress = progress
            fresh.attempts = max(fresh.attempts, existing.attempts)
            if existing.created_at is not None:
                fresh.created_at = existing.created_at
            if fresh.duration_s is None:
                fresh.duration_s = existing.duration_s
            if existing.verdict in FINAL_VERDICTS and fresh.verdict not in FINAL_VERDICTS:
                # a verdict is final: a poll read before it was journaled must not undo it
                fresh.verdict, fresh.credits = existing.verdict, existing.credits
                fresh.verdict_reason = existing.verdict_reason
                fresh.verdict_validator = existing.verdict_validator
            if shown_fields(fresh) == shown_fields(existing):
                continue  # nothing visible changed: no signal, no re-sort
            self._rows[self._index[fresh.transaction_id]] = fresh
            self._changed(fresh.transaction_id)

    def tick(self) -> None:
        """Refresh the time-dependent columns (age, countdown) once a second.

        Only their text moves with time: their sort keys (creation time, retry due time)
        do not, so the rows keep their order and a repaint of the visible cells is enough.
        A dataChanged over every row made the sort proxy re-sort the whole table each
        second (30-45 ms at 300 rows, measured, and growing with the table).
        """
        if self._rows:
            self.ticked.emit()


FINAL_VERDICTS = frozenset({"accepted", "rejected"})


def verdict_tooltip(row: TxRow) -> str | None:
    """Why a verdict is what it is: the reason and who gave it; what "overdue" means."""
    if row.verdict in ("accepted", "rejected"):
        who = f"\nvalidator {row.verdict_validator}" if row.verdict_validator else ""
        return f"{row.verdict}: {row.verdict_reason or ''}{who}"
    if row.verdict == "overdue":
        return "submitted, but no validator's verdict within the overdue block count"
    if row.verdict == "awaiting":
        return "submitted; waiting for a validator's verdict"
    return None


STATE_FILTERS: dict[str, frozenset[TxState] | None] = {
    "All": None,
    "Active": frozenset(),  # = every non-terminal state
    "Committed": frozenset({TxState.COMMITTED}),
    "Rolled back": frozenset({TxState.ROLLED_BACK}),
    "Failed": frozenset({TxState.FAILED}),
}


class TransactionsFilter(QtCore.QSortFilterProxyModel):
    """Filter by state group and sort by each column's natural key."""

    def __init__(self, parent: QtCore.QObject | None = None) -> None:
        super().__init__(parent)
        self._filter = "All"
        self.setSortRole(TransactionsModel.SORT_ROLE)
        self.setDynamicSortFilter(True)

    @property
    def state_filter(self) -> str:
        return self._filter

    def set_state_filter(self, name: str) -> None:
        if name not in STATE_FILTERS:
            raise ValueError(f"state filter must be one of {', '.join(STATE_FILTERS)}")
        self.beginFilterChange()
        self._filter = name
        self.endFilterChange()

    def filterAcceptsRow(self, source_row: int, source_parent: ModelIndex) -> bool:
        wanted = STATE_FILTERS[self._filter]
        if wanted is None:
            return True
        model = self.sourceModel()
        state = model.data(model.index(source_row, 0, source_parent), TransactionsModel.STATE_ROLE)
        if self._filter == "Active":
            return state not in TERMINAL
        return state in wanted
