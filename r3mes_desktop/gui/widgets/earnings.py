"""What the validators' verdicts earned, beside the transactions' title: "Credits earned:
1,100", and how many verdicts are overdue.

Its own label, not a status bar field: at 1280 pixels the status bar's problem text ("Can't
reach IPFS at …: connection refused — retrying in 28 s") needs all the room it has.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from r3mes_desktop.core.events import VerdictRecorded
from r3mes_desktop.gui.qt import QtWidgets

_KEYS = (
    "credits_total",
    "verdicts_accepted",
    "verdicts_rejected",
    "verdicts_pending",
    "verdicts_overdue",
)


class EarningsLabel(QtWidgets.QLabel):
    """Set from the journal's statistics at each poll; moved on by each verdict event."""

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__("Credits earned: …", parent)
        self.setObjectName("earnings")
        self._counts: dict[str, int] = {}

    def set_earnings(self, stats: Mapping[str, Any]) -> None:
        self._counts = {key: int(stats.get(key) or 0) for key in _KEYS}
        self._show()

    def on_verdict(self, event: VerdictRecorded) -> None:
        """A verdict just read counts now, not at the next statistics poll."""
        if not self._counts:
            return  # nothing to add it to before the first poll; that poll counts it
        c = self._counts
        c["credits_total"] += event.credits
        key = f"verdicts_{event.verdict}"
        c[key] = c.get(key, 0) + 1
        c["verdicts_pending"] = max(0, c["verdicts_pending"] - 1)
        self._show()

    def _show(self) -> None:
        c = self._counts
        overdue = c["verdicts_overdue"]
        late = f" · <span style='color:#b26a00'>{overdue} overdue</span>" if overdue else ""
        self.setText(f"Credits earned: <b>{c['credits_total']:,}</b>{late}")
        waiting = f"{c['verdicts_pending']} awaiting a validator's verdict"
        self.setToolTip(
            f"{c['verdicts_accepted']} accepted, {c['verdicts_rejected']} rejected, {waiting}"
            + (f" ({overdue} overdue)" if overdue else "")
        )

    def plain_text(self) -> str:
        """The label as the user reads it (its text without the markup)."""
        return _TAG.sub("", self.text())


_TAG = re.compile(r"<[^>]+>")
