"""The real window on the real runtime: embedded devnet, worker processes, fast rounds.

One runtime serves the whole module (opening it and warming the trainer takes seconds);
the tests run in file order and each leaves the miner stopped. Faults are injected the
way they happen: the IPFS store refuses connections (a wrapper around the real store).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import qasync
from eth_account import Account

from r3mes_desktop.adapters.devnet.devnet import DEV_PASSWORD_FILE
from r3mes_desktop.app.runtime import Runtime, RuntimeOptions
from r3mes_desktop.core.resilience.breaker import BreakerState
from r3mes_desktop.core.txstate import TxState
from r3mes_desktop.gui.main_window import MainWindow
from r3mes_desktop.gui.models.transactions_model import TransactionsModel
from r3mes_desktop.gui.qt import QtCore
from r3mes_desktop.support.config import load_settings, paths
from tests.helpers.gui_fakes import FlakyStore
from tests.helpers.shifted_clock import ShiftedClock

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

WAIT_MS = 90_000


class Rig:
    def __init__(self, window: MainWindow, runtime: Runtime, store: FlakyStore, clock: Any):
        self.window, self.runtime, self.store, self.clock = window, runtime, store, clock

    def diagnose(self) -> str:
        """What the window and runtime show now (attached to a timed-out wait)."""
        breakers = {n: b.state for n, b in self.runtime.breakers.snapshot().items()}
        return (
            f"states={self.states()} miner={self.window.miner_state} breakers={breakers} "
            f"alerts={[a.message for a in self.window.alerts.shown][-5:]} "
            f"refused={self.store.refused}"
        )

    def wait(self, qtbot: Any, condition: Any, what: str, timeout_ms: int = WAIT_MS) -> None:
        try:
            qtbot.waitUntil(condition, timeout=timeout_ms)
        except Exception as exc:  # pytest-qt's TimeoutError says nothing about the app
            raise AssertionError(f"timed out waiting for {what}: {self.diagnose()}") from exc

    def states(self) -> dict[str, TxState]:
        return {row.transaction_id: row.state for row in self.window.tx_model.rows()}

    def run(self, qtbot: Any, coro: Any, timeout_ms: int = WAIT_MS) -> Any:
        task = asyncio.ensure_future(coro)
        qtbot.waitUntil(task.done, timeout=timeout_ms)
        return task.result()

    def stop_miner(self, qtbot: Any) -> None:
        self.window.window_actions.stop.trigger()
        self.wait(qtbot, lambda: self.window.miner_state == "idle", "the miner to stop")

    def stop_mid_round(self, qtbot: Any) -> list[str]:
        """Start, click Stop while a round trains; the ids left unfinished in the journal.

        Tiny rounds train in about a second, so a round may finish before Stop lands; then
        it simply tries again.
        """
        for _attempt in range(5):
            before = set(self.states())
            self.window.window_actions.start.trigger()
            qtbot.waitUntil(
                lambda before=before: any(
                    self.states().get(t) == TxState.TRAINING for t in set(self.states()) - before
                ),
                timeout=WAIT_MS,
            )
            self.stop_miner(qtbot)
            unfinished = self.run(qtbot, self.runtime.coordinator.journal.unfinished())
            if unfinished:
                return [rec.id for rec in unfinished]
        raise AssertionError("Stop never caught a round before it finished")


def _spin_until(app: Any, done: Any, seconds: float) -> None:
    deadline = QtCore.QDeadlineTimer(int(seconds * 1000))
    while not done() and not deadline.hasExpired():
        app.processEvents(QtCore.QEventLoop.ProcessEventsFlag.AllEvents, 50)


@pytest.fixture(scope="module")
def rig(qapp: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    home = tmp_path_factory.mktemp("devnet-gui")
    mp = pytest.MonkeyPatch()
    for name, sub in (("R3MES_DATA_DIR", "data"), ("R3MES_CONFIG_DIR", "config")):
        mp.setenv(name, str(home / sub))
    loop = qasync.QEventLoop(qapp, already_running=True)
    asyncio.set_event_loop(loop)
    clock = ShiftedClock()
    holder: dict[str, FlakyStore] = {}

    def wrap(store: Any) -> FlakyStore:
        holder["store"] = FlakyStore(store)
        return holder["store"]

    options = RuntimeOptions.fast(
        wrap_store=wrap,
        clock=clock,
        maintenance_interval_s=1.0,
        settings_overrides={
            "pow_difficulty": 16,
            "max_retries": 1,
            "retry_initial_delay": 0.2,
            "retry_max_delay": 30.0,
            "breaker_failure_threshold": 2,
            "breaker_open_timeout": 600.0,
            "stale_threshold": 60.0,
        },
    )
    runtime = Runtime(options=options)
    window = MainWindow(runtime, tray_available=False, poll_ms=500)
    window.show()
    opening = asyncio.ensure_future(runtime.open())
    _spin_until(qapp, opening.done, 120)
    opening.result()
    window.runtime_ready()
    try:
        yield Rig(window, runtime, holder["store"], clock)
    finally:
        window.shutdown_widgets()
        closing = asyncio.ensure_future(_close(window, runtime))
        _spin_until(qapp, closing.done, 60)
        window.close()
        window.deleteLater()
        # Delete it now, while its loop is open: a deferred delete left pending is carried
        # out by pytest-qt's processEvents in some later test (a core test once died in a
        # segfault there).
        QtCore.QCoreApplication.sendPostedEvents(None, QtCore.QEvent.Type.DeferredDelete)
        loop._QEventLoop__is_running = False  # type: ignore[attr-defined]  # see conftest
        asyncio.events._set_running_loop(None)
        loop.close()
        asyncio.set_event_loop(None)
        mp.undo()


async def _close(window: MainWindow, runtime: Runtime) -> None:
    await window.tasks.cancel_all()
    await runtime.close()


def test_start_commits_and_shows_in_view_and_charts(rig: Rig, qtbot: Any) -> None:
    window = rig.window
    assert window.window_actions.start.isEnabled()
    window.window_actions.start.trigger()
    qtbot.waitUntil(lambda: TxState.COMMITTED in rig.states().values(), timeout=WAIT_MS)
    # in the view (through the filter proxy), with every step done
    window.state_filter.setCurrentText("Committed")
    assert window.tx_proxy.rowCount() >= 1
    state = window.tx_proxy.index(0, TransactionsModel.COL_STATE).data()
    assert state == "COMMITTED"
    window.state_filter.setCurrentText("All")
    # and in the charts: success rate, training loss, PoW hash rate
    qtbot.waitUntil(lambda: window.chart_data.committed >= 1, timeout=WAIT_MS)
    assert window.chart_data.rates["success"][-1][1] > 0
    assert len(window.chart_data.loss) > 0 and len(window.chart_data.hash_rate) > 0
    qtbot.waitUntil(lambda: window.charts is not None, timeout=10_000)
    assert window.charts.redraws >= 1
    assert window.status.chain.text().startswith("Chain: devnet")
    # the miner said where it is, through the bridge onto the status bar
    assert window.status.rounds.text().startswith("Rounds: ")
    assert window.status.rounds.toolTip().startswith("Connected to the embedded devnet (chain ")
    rig.stop_miner(qtbot)


def test_stop_mid_training_then_resume_button_continues(rig: Rig, qtbot: Any) -> None:
    window = rig.window
    rig.stop_mid_round(qtbot)
    qtbot.waitUntil(window.window_actions.resume.isEnabled, timeout=WAIT_MS)
    text = window.window_actions.resume.text()
    item = window.ops.resumable[0]
    assert text.startswith(f"Resume round {item['round_id']}") and "old)" in text
    stopped = item["transaction_id"]
    with qtbot.waitSignal(window.action_reported, timeout=WAIT_MS) as said:
        window.window_actions.resume.trigger()
    assert said.args[0] == f"{text}: resuming."
    qtbot.waitUntil(lambda: rig.states().get(stopped) == TxState.COMMITTED, timeout=WAIT_MS)


def test_stale_cleanup_button_closes_old_unfinished_transactions(rig: Rig, qtbot: Any) -> None:
    window = rig.window
    stuck = rig.stop_mid_round(qtbot)
    rig.clock.advance_wall(600)  # ten minutes later: past the 60 s stale threshold
    reports: list[str] = []
    window.action_reported.connect(reports.append)
    window.window_actions.cleanup.trigger()
    qtbot.waitUntil(lambda: any(r.startswith("Cleaned up") for r in reports), timeout=WAIT_MS)
    report = next(r for r in reports if r.startswith("Cleaned up"))
    assert report.startswith(f"Cleaned up {len(stuck)} stale transaction")
    terminal = (TxState.FAILED, TxState.ROLLED_BACK, TxState.COMMITTED)
    qtbot.waitUntil(lambda: all(rig.states().get(t) in terminal for t in stuck), timeout=WAIT_MS)
    qtbot.waitUntil(
        lambda: any(report in line.message for line in window.log_model.lines()), timeout=5000
    )


def test_ipfs_failure_rolls_back_notifies_and_opens_breaker_reset_closes(
    rig: Rig, qtbot: Any
) -> None:
    window = rig.window
    before = set(rig.states())  # earlier tests rolled back stale rounds: only new ones count
    rig.store.failing = True
    window.window_actions.start.trigger()
    rig.wait(qtbot, lambda: TxState.ROLLED_BACK in _new_states(rig, before), "a rollback")

    def rollback_alerts() -> list[Any]:
        return [a for a in window.alerts.shown if "IPFS unreachable" in a.message]

    # the banner (no tray offscreen) says what happened, in plain words
    rig.wait(qtbot, lambda: rollback_alerts() and window.banner.isVisible(), "the alert")
    assert rollback_alerts()[0].level == "warning"
    assert rollback_alerts()[0].message.endswith("rolled back: IPFS unreachable")
    # the error chart counts the network error
    qtbot.waitUntil(lambda: window.chart_data.errors["network"] >= 1, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: (window.charts.error_heights() or [0])[0] >= 1, timeout=10_000)
    # the IPFS breaker opened after repeated refusals; the panel shows it
    rig.wait(
        qtbot,
        lambda: (
            (row := window.breakers_model.row_of("ipfs")) is not None
            and row.state == BreakerState.OPEN
        ),
        "the IPFS breaker to open",
    )
    assert "Can't reach IPFS" in window.status.problem_text()
    rig.stop_miner(qtbot)
    rig.store.failing = False
    reset, _force = window.breakers_panel.buttons["ipfs"]
    reset.click()
    qtbot.waitUntil(
        lambda: window.breakers_model.row_of("ipfs").state == BreakerState.CLOSED, timeout=5000
    )
    assert rig.runtime.breakers.get("ipfs").snapshot().state == "closed"
    assert "IPFS" not in window.status.problem_text()


def test_settings_from_the_window_validate_and_persist(rig: Rig, qtbot: Any) -> None:
    window = rig.window
    window.window_actions.settings.trigger()
    dialog = window.settings_dialog
    qtbot.addWidget(dialog)
    dialog.set_field("max_active_transactions", "0")
    assert dialog.error_for("max_active_transactions") == (
        "max_active_transactions (R3MES_MAX_ACTIVE_TRANSACTIONS) = 0 is out of range: "
        "accepted 1–100"
    )
    assert not dialog.ok_button.isEnabled()
    dialog.set_field("max_active_transactions", "3")
    dialog.ok_button.click()
    assert rig.runtime.settings.max_active_transactions == 3
    assert rig.runtime.coordinator.bulkhead.limit == 3  # applied live
    assert load_settings(paths().settings_file).max_active_transactions == 3
    assert not Path(paths().settings_file).read_text().count("pow_difficulty = 40")


def test_export_diagnostics_writes_a_zip_without_secrets(rig: Rig, qtbot: Any) -> None:
    import zipfile

    window = rig.window
    folder = rig.runtime.data_dir / "diagnostics"
    with qtbot.waitSignal(window.action_reported, timeout=WAIT_MS) as reported:
        window.window_actions.export_diagnostics.trigger()
    assert reported.args[0].startswith("Diagnostics written to")
    (zip_path,) = folder.glob("*.zip")
    assert str(zip_path) in reported.args[0]
    with zipfile.ZipFile(zip_path) as archive:
        names = archive.namelist()
        blob = b"".join(archive.read(n) for n in names)
    assert names  # logs, settings, stats, versions
    (password_file,) = rig.runtime.data_dir.rglob(DEV_PASSWORD_FILE)
    password = password_file.read_text().strip()
    keystore = json.loads(next(password_file.parent.glob("*.json")).read_text())
    key_hex = bytes(Account.decrypt(keystore, password)).hex()
    assert password.encode() not in blob
    assert key_hex.encode() not in blob and key_hex.upper().encode() not in blob


def _new_states(rig: Rig, before: set[str]) -> set[TxState]:
    return {state for tx_id, state in rig.states().items() if tx_id not in before}
