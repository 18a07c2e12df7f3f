"""The credits label beside the transactions: the journal's totals, moved on live."""

from __future__ import annotations

from typing import Any

from r3mes_desktop.core.events import VerdictRecorded
from r3mes_desktop.gui.widgets.earnings import EarningsLabel


def _verdict(verdict: str, credits: int) -> VerdictRecorded:
    return VerdictRecorded(
        transaction_id="tx",
        round_id=1,
        verdict=verdict,
        reason=0 if verdict == "accepted" else 5,
        reason_text="",
        credits=credits,
        block_number=1,
        validator="0x" + "cd" * 20,
    )


def test_credits_count_live_and_overdue_verdicts_are_flagged(qtbot: Any) -> None:
    label = EarningsLabel()
    qtbot.addWidget(label)
    label.on_verdict(_verdict("accepted", 100))  # before the first poll: left to that poll
    assert label.plain_text() == "Credits earned: …"

    label.set_earnings(
        {
            "credits_total": 1100,
            "verdicts_accepted": 11,
            "verdicts_rejected": 1,
            "verdicts_pending": 2,
            "verdicts_overdue": 1,
        }
    )
    assert label.plain_text() == "Credits earned: 1,100 · 1 overdue"
    label.on_verdict(_verdict("accepted", 100))
    label.on_verdict(_verdict("rejected", 0))

    assert label.plain_text() == "Credits earned: 1,200 · 1 overdue"
    assert label.toolTip() == (
        "12 accepted, 2 rejected, 0 awaiting a validator's verdict (1 overdue)"
    )
    label.set_earnings({"credits_total": 0})  # a fresh journal: every count at 0
    assert label.plain_text() == "Credits earned: 0"
