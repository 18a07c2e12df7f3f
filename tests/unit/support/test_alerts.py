"""Grouping and rate limiting of user alerts (no Qt, injected clock)."""

from __future__ import annotations

from r3mes_desktop.core.clock import ManualClock
from r3mes_desktop.core.events import (
    BreakerStateChanged,
    CompensationFailed,
    Notice,
    TransactionStateChanged,
)
from r3mes_desktop.support.alerts import NoticeCenter, failure_reason, severity_rank


def _rolled_back(tx: str) -> TransactionStateChanged:
    return TransactionStateChanged(
        transaction_id=tx,
        round_id=4,
        old_state="ipfs_upload",
        new_state="rolled_back",
        failed_step="ipfs_upload",
        error_category="network",
        error_message="connection refused",
    )


def test_first_alert_at_once_repeats_grouped_after_the_quiet_interval() -> None:
    clock = ManualClock()
    center = NoticeCenter(window_s=300, min_interval_s=60, clock=clock)
    first = center.on_event(_rolled_back("aaaaaaaa1"))
    assert first is not None
    assert first.message == "Transaction aaaaaaaa (round 4) rolled back: IPFS unreachable"
    clock.advance(10)
    assert center.on_event(_rolled_back("bbbbbbbb2")) is None
    clock.advance(10)
    assert center.on_event(_rolled_back("cccccccc3")) is None
    assert center.flush() == []  # still inside the quiet interval
    clock.advance(45)
    grouped = center.flush()
    assert [a.message for a in grouped] == [
        "3 transactions rolled back in the last 5 min: IPFS unreachable"
    ]
    assert grouped[0].count == 3
    assert center.flush() == []


def test_occurrences_outside_the_window_are_not_counted() -> None:
    clock = ManualClock()
    center = NoticeCenter(window_s=120, min_interval_s=60, clock=clock)
    assert center.on_event(_rolled_back("a" * 9)) is not None
    clock.advance(59)
    assert center.on_event(_rolled_back("b" * 9)) is None
    clock.advance(100)  # the first one is now 159 s old
    assert [a.count for a in center.flush()] == [1]


def test_breaker_open_and_notices() -> None:
    center = NoticeCenter(clock=ManualClock())
    alert = center.on_event(
        BreakerStateChanged(
            service="ipfs",
            old_state="closed",
            new_state="open",
            failure_count=5,
            seconds_until_half_open=30.0,
        )
    )
    assert alert is not None
    assert alert.message == "Calls to IPFS paused after 5 failures; next try in 30 s"
    assert center.on_event(Notice(level="info", message="hello")) is None
    warn = center.on_event(Notice(level="warning", message="disk low", source="disk"))
    assert warn is not None and warn.level == "warning"


def test_failure_reasons_and_severity() -> None:
    assert failure_reason("BLOCKCHAIN_SUBMIT", "network", None) == "The chain RPC unreachable"
    assert failure_reason("FETCH", "network", None) == "IPFS unreachable"  # model/dataset
    assert failure_reason("BLOCKCHAIN_SUBMIT", "validation", "x") == (
        "the contract rejected the submission"
    )
    assert severity_rank("error") > severity_rank("warning") > severity_rank("info")
    # no category (e.g. a stale cleanup) is not "unreachable": the journal's reason is kept
    assert failure_reason("IPFS_UPLOAD", None, "stale: ipfs_upload for 600s") == (
        "ipfs upload: stale: ipfs_upload for 600s"
    )


def test_a_failed_undo_of_an_unanswered_upload_is_said_in_words() -> None:
    center = NoticeCenter(window_s=300, min_interval_s=60, clock=ManualClock())
    alert = center.on_event(
        CompensationFailed(
            transaction_id="mining_tx_1a2b3c4d5e",
            action="unpin_upload",
            target="ab" * 32,  # a gradient hash: meaningless to a person
            category="network",
            message="ipfs: circuit open",
        )
    )
    assert alert is not None and alert.level == "error"
    assert alert.message == (
        "Could not undo the upload (unpin whatever IPFS pinned) for transaction 1a2b3c4d: "
        "ipfs: circuit open. It will be retried."
    )
