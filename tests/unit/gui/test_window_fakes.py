"""Widget-level tests of the main window against in-memory fakes (fast; no devnet)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from r3mes_desktop.core.txstate import TxState
from r3mes_desktop.gui.main_window import MainWindow
from r3mes_desktop.gui.models.transactions_model import TransactionsModel
from tests.helpers.gui_fakes import FakeRuntime


@pytest.fixture
def window(qtbot: Any, qloop: Any, tmp_path: Path) -> MainWindow:
    runtime = FakeRuntime(tmp_path)
    win = MainWindow(runtime, tray_available=False, poll_ms=200)
    qtbot.addWidget(win)
    win.show()
    with qtbot.waitSignal(win.refreshed, timeout=3000):
        pass
    return win


def test_committed_transaction_shows_in_view_and_charts(window: MainWindow, qtbot: Any) -> None:
    coord = window.runtime.coordinator
    tx_id = coord.commit(round_id=3)
    qtbot.waitUntil(
        lambda: (
            window.tx_model.row(tx_id) is not None
            and window.tx_model.row(tx_id).state == TxState.COMMITTED
        ),
        timeout=3000,
    )
    qtbot.waitUntil(lambda: window.chart_data.committed == 1, timeout=3000)
    assert window.chart_data.rates["success"][-1][1] == 1.0
    col = TransactionsModel.COL_STATE
    texts = [window.tx_proxy.index(r, col).data() for r in range(window.tx_proxy.rowCount())]
    assert "COMMITTED" in texts


def test_ipfs_rollback_shows_banner_and_error_chart(window: MainWindow, qtbot: Any) -> None:
    coord = window.runtime.coordinator
    for _ in range(3):
        coord.roll_back_on_ipfs()
    qtbot.waitUntil(window.banner.isVisible, timeout=3000)
    assert "IPFS unreachable" in window.banner.text()
    qtbot.waitUntil(lambda: window.chart_data.errors["network"] == 3, timeout=3000)
    qtbot.waitUntil(lambda: window.charts is not None, timeout=5000)
    qtbot.waitUntil(lambda: window.charts.error_heights()[:1] == [3], timeout=3000)


def test_state_filter(window: MainWindow, qtbot: Any) -> None:
    coord = window.runtime.coordinator
    coord.commit()
    coord.roll_back_on_ipfs()
    qtbot.waitUntil(lambda: window.tx_model.rowCount() == 2, timeout=3000)
    window.state_filter.setCurrentText("Rolled back")
    assert window.tx_proxy.rowCount() == 1
    window.state_filter.setCurrentText("All")
    assert window.tx_proxy.rowCount() == 2


def test_timers_firing_after_shutdown_start_no_core_work(window: MainWindow, qtbot: Any) -> None:
    """The chart loader (250 ms after the first paint) and the refresh an event queues may
    fire after the window shut down, when no event loop is left to run them: they must
    start nothing (CI once saw "no current event loop" from exactly this)."""
    window.shutdown_widgets()
    window.load_charts()
    window.refresh()
    assert window.tasks.running == 0
    assert window.charts is None


def test_a_verdict_shows_in_the_table_details_charts_and_earnings(
    window: MainWindow, qtbot: Any
) -> None:
    coord = window.runtime.coordinator
    tx_id = coord.commit(round_id=3)
    qtbot.waitUntil(lambda: _verdict_text(window, tx_id) == "awaiting", timeout=3000)
    window.tx_view.selectRow(0)

    coord.post_verdict(tx_id, accepted=True, credits=250)

    qtbot.waitUntil(lambda: _verdict_text(window, tx_id) == "accepted +250", timeout=3000)
    assert window.chart_data.credits_total == 250
    qtbot.waitUntil(lambda: window.earnings.plain_text() == "Credits earned: 250", timeout=3000)
    qtbot.waitUntil(lambda: "Credits\n250" in window.details.text(), timeout=3000)


def test_verdicts_journaled_before_the_window_opened_fill_the_credits_chart(
    qtbot: Any, qloop: Any, tmp_path: Path
) -> None:
    runtime = FakeRuntime(tmp_path)
    coord = runtime.coordinator
    for round_id, accepted in ((1, True), (2, False), (3, True)):
        coord.post_verdict(coord.commit(round_id=round_id), accepted=accepted, credits=100)
    win = MainWindow(runtime, tray_available=False, poll_ms=200)
    qtbot.addWidget(win)
    win.show()

    qtbot.waitUntil(lambda: win.chart_data.verdicts_seen == 3, timeout=3000)

    assert [total for _, total in win.chart_data.credits] == [100.0, 100.0, 200.0]
    assert win.earnings.plain_text() == "Credits earned: 200"
    texts = {_verdict_text(win, tx) for tx in coord.txs}
    assert texts == {"accepted +100", "rejected"}


def test_a_new_model_version_shows_in_the_network_chart_and_the_details(
    window: MainWindow, qtbot: Any
) -> None:
    coord = window.runtime.coordinator
    tx_id = coord.commit(round_id=3)
    coord.post_verdict(tx_id, accepted=True)
    qtbot.waitUntil(lambda: _verdict_text(window, tx_id) == "accepted +100", timeout=3000)
    window.tx_view.selectRow(0)
    qtbot.waitUntil(lambda: "trained on version 0 (genesis)" in window.details.text(), timeout=3000)
    assert "went into" not in window.details.text()

    coord.publish_version(3, eval_loss=1.875)

    qtbot.waitUntil(lambda: window.chart_data.network_series() == ([1.0], [1.875]), timeout=3000)
    qtbot.waitUntil(lambda: "Update\nwent into version 1" in window.details.text(), timeout=3000)
    qtbot.waitUntil(lambda: window.charts is not None, timeout=5000)
    window.charts.redraw_if_dirty(everything=True)
    xs, ys = window.charts._network_curve.getData()
    assert (list(xs), list(ys)) == ([1.0], [1.875])


def test_versions_journaled_before_the_window_opened_fill_the_network_chart(
    qtbot: Any, qloop: Any, tmp_path: Path
) -> None:
    runtime = FakeRuntime(tmp_path)
    coord = runtime.coordinator
    for round_id, loss in ((1, 5.0), (2, 1.9), (4, 1.5)):
        coord.publish_version(round_id, eval_loss=loss, announce=False)
    win = MainWindow(runtime, tray_available=False, poll_ms=200)
    qtbot.addWidget(win)
    win.show()

    qtbot.waitUntil(lambda: win.chart_data.network_seen == (3, 1.5), timeout=3000)

    assert win.chart_data.network_series() == ([1.0, 2.0, 3.0], [5.0, 1.9, 1.5])


def _verdict_text(window: MainWindow, tx_id: str) -> str | None:
    proxy = window.tx_proxy
    for r in range(proxy.rowCount()):
        if proxy.index(r, 0).data(TransactionsModel.ID_ROLE) == tx_id:
            return str(proxy.index(r, TransactionsModel.COL_VERDICT).data())
    return None
