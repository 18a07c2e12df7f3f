"""The transactions table's once-a-second tick repaints ages and countdowns without
re-sorting the table (a dataChanged over every row made the sort proxy re-sort it)."""

from __future__ import annotations

from typing import Any

from r3mes_desktop.core.events import TransactionStateChanged
from r3mes_desktop.core.txstate import TxState
from r3mes_desktop.gui.models.transactions_model import TransactionsFilter, TransactionsModel
from r3mes_desktop.gui.qt import Qt


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
