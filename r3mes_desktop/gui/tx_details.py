"""Details panel: one transaction's fields, full error text and event history."""

from __future__ import annotations

import html
import time
from typing import Any

from r3mes_desktop.gui.qt import QtWidgets
from r3mes_desktop.gui.records import field_of
from r3mes_desktop.gui.transactions_model import TxRow, describe_history_item, row_from_status


class TransactionDetails(QtWidgets.QTextBrowser):
    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("transaction-details")
        self.setOpenLinks(False)
        self.current_id: str | None = None
        self.show_row(None)

    def show_row(self, row: TxRow | None, history: list[str] | None = None) -> None:
        if row is None:
            self.current_id = None
            self.setHtml("<p style='color:#666'>Select a transaction to see its history.</p>")
            return
        self.current_id = row.transaction_id
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row.created_at))
        fields = [
            ("Transaction", row.transaction_id),
            ("Round", "" if row.round_id is None else str(row.round_id)),
            ("State", row.state),
            ("Progress", row.progress_text()),
            ("Started", created),
            ("Attempts", str(row.attempts)),
        ]
        if row.failed_step:
            fields.append(("Failed step", row.failed_step))
        if row.error_category:
            fields.append(("Error category", row.error_category))
        parts = ["<table cellspacing=2>"]
        for name, value in fields:
            parts.append(f"<tr><td><b>{name}</b></td><td>{html.escape(value)}</td></tr>")
        parts.append("</table>")
        if row.error_message:
            parts.append(
                "<p><b>Error</b><br><span style='color:#8e0000'>"
                f"{html.escape(row.error_message).replace(chr(10), '<br>')}</span></p>"
            )
        lines = history if history is not None else row.history
        parts.append("<p><b>History</b></p><ul style='margin-left:-20px'>")
        parts.extend(f"<li>{html.escape(line)}</li>" for line in lines[-60:])
        parts.append("</ul>")
        self.setHtml("".join(parts))

    def show_status(self, row: TxRow, status: Any) -> None:
        """Redraw from the coordinator's full record (journal history beats our events)."""
        fresh = row_from_status(status)
        fresh.progress = {**row.progress, **fresh.progress}
        events = field_of(status, "history", "events", default=None)
        history = [describe_history_item(i) for i in events] if events else row.history
        self.show_row(fresh, history)

    def text(self) -> str:
        return self.toPlainText()
