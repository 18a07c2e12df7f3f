"""The transactions table's once-a-second tick repaints ages and countdowns without
re-sorting the table (a dataChanged over every row made the sort proxy re-sort it); the
validators' verdicts show in their own column and in the details, live and from the journal."""

from __future__ import annotations

from typing import Any

from r3mes_desktop.core.events import TransactionStateChanged, VerdictRecorded
from r3mes_desktop.core.records import TransactionStatus
from r3mes_desktop.core.txstate import STEPS, TxState
from r3mes_desktop.gui.models.transactions_model import TransactionsFilter, TransactionsModel
from r3mes_desktop.gui.qt import Qt
from r3mes_desktop.gui.widgets.tx_details import TransactionDetails


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_tick_repaints_ages_without_resorting(qtbot: Any) -> None:
    clock = Clock()
    model = TransactionsModel(clock=clock)
    for i in range(3):
        model.apply_event(
            TransactionStateChanged(
                transaction_id=f"mining_tx_{i:032x}",
                round_id=i,
                old_state=None,
                new_state="training",
                ts=clock.now - 10 * (3 - i),
            )
        )
    model.flush()
    proxy = TransactionsFilter()
    proxy.setSourceModel(model)
    proxy.sort(TransactionsModel.COL_AGE, Qt.SortOrder.DescendingOrder)
    order = [proxy.index(r, 0).data(TransactionsModel.ID_ROLE) for r in range(3)]
    changed: list[Any] = []
    model.dataChanged.connect(lambda *args: changed.append(args))
    age = model.index(0, TransactionsModel.COL_AGE)
    before = age.data()
    clock.now += 65
    with qtbot.waitSignal(model.ticked, timeout=1000):
        model.tick()
    assert changed == []  # nothing for the proxy to re-sort
    assert age.data() != before  # what a repaint shows now
    assert [proxy.index(r, 0).data(TransactionsModel.ID_ROLE) for r in range(3)] == order
    assert model.data(age, int(Qt.ItemDataRole.DecorationRole)) is None
    assert model.data(model.index(0, 0), TransactionsModel.STATE_ROLE) == TxState.TRAINING


TX = "mining_tx_" + "ab" * 16
VALIDATOR = "0x" + "cd" * 20


def _committed(model: TransactionsModel) -> None:
    for old, new in (
        (None, "pending"),
        ("pending", "task_complete"),
        ("task_complete", "committed"),
    ):
        model.apply_event(
            TransactionStateChanged(
                transaction_id=TX, round_id=7, old_state=old, new_state=new, ts=1_000.0
            )
        )


def _verdict(verdict: str, credits: int, reason: int, text: str) -> VerdictRecorded:
    return VerdictRecorded(
        transaction_id=TX,
        round_id=7,
        verdict=verdict,
        reason=reason,
        reason_text=text,
        credits=credits,
        block_number=140,
        validator=VALIDATOR,
        ts=1_010.0,
    )


def _status(verdict: str | None, credits: int | None = None) -> TransactionStatus:
    return TransactionStatus(
        transaction_id=TX,
        state="committed",
        age_seconds=3.0,
        failed_step=None,
        error_message=None,
        progress={s.value: True for s in STEPS},
        round_id=7,
        attempts=0,
        next_retry_at=None,
        error_category=None,
        verdict=verdict,
        verdict_reason_text=None if credits is None else "accepted",
        credits=credits,
        verdict_validator=None if credits is None else VALIDATOR,
    )


def _cell(model: TransactionsModel, role: Qt.ItemDataRole = Qt.ItemDataRole.DisplayRole) -> Any:
    return model.index(0, TransactionsModel.COL_VERDICT).data(role)


def test_a_verdict_shows_in_its_own_column_as_it_is_read(qtbot: Any) -> None:
    model = TransactionsModel()
    _committed(model)
    assert _cell(model) == "awaiting"  # committed: a validator has yet to speak

    model.apply_event(_verdict("accepted", 250, 0, "accepted"))

    assert _cell(model) == "accepted +250"
    assert _cell(model, Qt.ItemDataRole.ForegroundRole).color().name() == "#2e7d32"
    assert _cell(model, Qt.ItemDataRole.ToolTipRole) == f"accepted: accepted\nvalidator {VALIDATOR}"
    row = model.row(TX)
    assert row is not None and row.history[-1].endswith("verdict accepted: +250 credits")


def test_a_rejection_says_why_in_red(qtbot: Any) -> None:
    model = TransactionsModel()
    _committed(model)
    model.apply_event(_verdict("rejected", 0, 5, "a sampled training segment did not reproduce"))

    assert _cell(model) == "rejected"
    assert _cell(model, Qt.ItemDataRole.ForegroundRole).color().name() == "#c62828"
    assert "a sampled training segment did not reproduce" in _cell(
        model, Qt.ItemDataRole.ToolTipRole
    )


def test_a_poll_read_before_the_verdict_does_not_undo_it(qtbot: Any) -> None:
    model = TransactionsModel()
    model.replace_from_snapshot([_status("awaiting")])
    model.apply_event(_verdict("accepted", 100, 0, "accepted"))

    model.replace_from_snapshot([_status("awaiting")])  # read just before the journal write

    assert _cell(model) == "accepted +100"
    model.replace_from_snapshot([_status("accepted", 100)])
    assert _cell(model) == "accepted +100"


def test_the_journals_verdict_fills_a_row_no_event_reached(qtbot: Any) -> None:
    model = TransactionsModel()
    model.replace_from_snapshot([_status("overdue")])
    assert _cell(model) == "overdue"
    assert "no validator's verdict" in _cell(model, Qt.ItemDataRole.ToolTipRole)

    model.replace_from_snapshot([_status("accepted", 100)])
    model.flush()

    assert _cell(model) == "accepted +100"


def test_the_details_panel_shows_verdict_reason_and_credits(qtbot: Any) -> None:
    details = TransactionDetails()
    qtbot.addWidget(details)
    model = TransactionsModel()
    _committed(model)
    model.apply_event(_verdict("rejected", 0, 5, "a sampled training segment did not reproduce"))
    row = model.row(TX)
    assert row is not None

    details.show_row(row)

    lines = details.text().splitlines()
    fields = dict(zip(lines[1::2], lines[2::2], strict=False))  # a two-column table
    assert fields["Verdict"] == "Rejected"
    assert fields["Reason"] == "a sampled training segment did not reproduce"
    assert (fields["Credits"], fields["Validator"]) == ("0", VALIDATOR)


FETCHED = {
    "adapter": {"cid": "bafkadapter", "sha256": "ee" * 32, "path": "/m/a"},
    "dataset": {"cid": "bafkdata", "sha256": "dd" * 32, "path": "/m/d"},
}


def _in_training(fetched: dict[str, dict[str, str]] | None) -> TransactionStatus:
    return TransactionStatus(
        transaction_id=TX,
        state="training",
        age_seconds=3.0,
        failed_step=None,
        error_message=None,
        progress={s.value: s is TxState.FETCH for s in STEPS},
        round_id=7,
        attempts=0,
        next_retry_at=None,
        error_category=None,
        model_version=0 if fetched is None else 3,
        fetched=fetched,
    )


def test_fetch_shows_as_a_step_only_for_a_round_that_fetches(qtbot: Any) -> None:
    model = TransactionsModel()
    model.replace_from_snapshot([_in_training(FETCHED)])
    row = model.row(TX)
    assert row is not None
    assert row.progress_text() == "fetch ✓ · train 0% · upload · submit · task"

    model = TransactionsModel()
    model.replace_from_snapshot([_in_training(None)])  # the base model: nothing fetched
    row = model.row(TX)
    assert row is not None
    assert row.progress_text() == "train 0% · upload · submit · task"


def test_fetch_shows_live_as_its_events_arrive(qtbot: Any) -> None:
    model = TransactionsModel()
    for old, new in ((None, "pending"), ("pending", "fetch")):
        model.apply_event(
            TransactionStateChanged(
                transaction_id=TX, round_id=7, old_state=old, new_state=new, ts=1_000.0
            )
        )
    row = model.row(TX)
    assert row is not None
    assert row.state_text() == "FETCH — fetch 0% · train · upload · submit · task"
    model.apply_event(
        TransactionStateChanged(
            transaction_id=TX, round_id=7, old_state="fetch", new_state="training", ts=1_001.0
        )
    )
    assert row.state_text() == "TRAINING — fetch ✓ · train 0% · upload · submit · task"


def test_the_details_panel_names_the_verified_files(qtbot: Any) -> None:
    details = TransactionDetails()
    qtbot.addWidget(details)
    model = TransactionsModel()
    model.replace_from_snapshot([_in_training(FETCHED)])
    row = model.row(TX)
    assert row is not None

    details.show_row(row)

    lines = details.text().splitlines()
    fields = dict(zip(lines[1::2], lines[2::2], strict=False))
    assert fields["Model"] == "trained on version 3"
    assert fields["Fetched adapter"] == "bafkadapter (sha256 eeeeeeeeeeee…, verified)"
    assert fields["Fetched dataset"] == "bafkdata (sha256 dddddddddddd…, verified)"
