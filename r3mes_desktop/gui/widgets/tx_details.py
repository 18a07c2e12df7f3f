"""Details panel: one transaction's fields, full error text and event history."""

from __future__ import annotations

import html
import time
from typing import TYPE_CHECKING

from r3mes_desktop.gui.models.tx_rows import TxRow, describe_history_item, state_label
from r3mes_desktop.gui.qt import QtWidgets

if TYPE_CHECKING:
    from r3mes_desktop.core.records import TransactionStatus


class TransactionDetails(QtWidgets.QTextBrowser):
    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("transaction-details")
        self.setOpenLinks(False)
        self.current_id: str | None = None
        self._journal_history: tuple[str, list[str]] | None = None
        self._html: str | None = None
        self.show_row(None)

    def history_for(self, transaction_id: str, row: TxRow) -> list[str]:
        """The journal's history if loaded for this transaction, else the events seen."""
        if self._journal_history is not None and self._journal_history[0] == transaction_id:
            return self._journal_history[1]
        return row.history

    def show_row(self, row: TxRow | None, history: list[str] | None = None) -> None:
        if row is None:
            self.current_id = None
            self._set_html("<p style='color:#666'>Select a transaction to see its history.</p>")
            return
        self.current_id = row.transaction_id
        created = (
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row.created_at))
            if row.created_at is not None
            else "—"
        )
        fields = [
            ("Transaction", row.transaction_id),
            ("Round", "" if row.round_id is None else str(row.round_id)),
            ("State", row.state.name),
            ("Progress", row.progress_text()),
            ("Started", created),
            *(
                (("Took", row.age_text(time.time()).removeprefix("done in ")),)
                if row.duration_s is not None
                else ()
            ),
            ("Attempts", str(row.attempts)),
        ]
        fields.extend(verdict_fields(row))
        fields.extend(model_fields(row))
        if row.failed_step:
            fields.append(("Failed step", state_label(row.failed_step)))
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
        self._set_html("".join(parts))

    def _set_html(self, text: str) -> None:
        """Re-render only when something changed, keeping the reader's scroll position."""
        if text == self._html:
            return
        self._html = text
        bar = self.verticalScrollBar()
        position = bar.value()
        self.setHtml(text)
        bar.setValue(position)

    def show_status(self, row: TxRow, status: TransactionStatus) -> None:
        """Redraw with the journal's history of the transaction.

        The fields come from the model's row, which merges polls and live events, so the
        panel never shows an older state than the table; the history comes from the journal
        (transitions, retries, compensations, notes), which events alone cannot rebuild.
        """
        events = status.history
        history = [describe_history_item(i) for i in events] if events else row.history
        self._journal_history = (row.transaction_id, history)
        self.show_row(row, history)

    def text(self) -> str:
        return self.toPlainText()


VERDICT_WORDS = {
    "accepted": "Accepted",
    "rejected": "Rejected",
    "awaiting": "Awaiting a validator's verdict",
    "overdue": "Overdue: no validator's verdict yet",
}


def verdict_fields(row: TxRow) -> list[tuple[str, str]]:
    """What the validators said of a committed transaction, and what it earned."""
    if row.verdict is None:
        return []
    fields = [("Verdict", VERDICT_WORDS.get(row.verdict, row.verdict))]
    if row.verdict == "rejected" and row.verdict_reason:
        fields.append(("Reason", row.verdict_reason))
    if row.verdict in ("accepted", "rejected"):
        fields.append(("Credits", str(row.credits or 0)))
        if row.verdict_validator:
            fields.append(("Validator", row.verdict_validator))
    return fields


def model_fields(row: TxRow) -> list[tuple[str, str]]:
    """The network model version the round trained on, and whether the update went into
    the next one (known once the validators' verdict is final)."""
    if row.model_version is None:
        return []
    genesis = " (genesis)" if row.model_version == 0 else ""
    fields = [("Model", f"trained on version {row.model_version}{genesis}")]
    if row.aggregation_text:
        fields.append(("Update", row.aggregation_text))
    for kind, entry in sorted((row.fetched or {}).items()):
        fields.append(
            (
                f"Fetched {kind}",
                f"{entry.get('cid', '?')} (sha256 {entry.get('sha256', '?')[:12]}…, verified)",
            )
        )
    return fields
