"""The main window: actions, transactions, charts, breakers, dead letters, log, status.

It talks to the core only through the `runtime` it is given (`ports.RuntimePort`) and
hears from it only through the `EventBridge`. Every core call runs as an asyncio task on the
same (qasync) loop: the poll via `Poller`, the one-click commands via `CommandRunner`, so
no click ever blocks painting.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from r3mes_desktop.core.events import (
    Event,
    MinerStateChanged,
    ModelVersionPublished,
    StatsChanged,
    StepProgress,
    TransactionStateChanged,
)
from r3mes_desktop.core.txstate import TERMINAL, TxState
from r3mes_desktop.gui.actions import create_actions
from r3mes_desktop.gui.bridge import EventBridge, TaskRunner
from r3mes_desktop.gui.commands import Outcome
from r3mes_desktop.gui.latency import LatencyProbe
from r3mes_desktop.gui.models.chart_data import ChartData
from r3mes_desktop.gui.models.transactions_model import TransactionsFilter, TransactionsModel
from r3mes_desktop.gui.ports import RuntimePort
from r3mes_desktop.gui.qt import QtCore, QtGui, QtWidgets, Signal
from r3mes_desktop.gui.widgets.banner import NoticeBanner
from r3mes_desktop.gui.widgets.breakers_panel import BreakersModel, BreakersPanel
from r3mes_desktop.gui.widgets.dead_letters_panel import DeadLettersModel, DeadLettersPanel
from r3mes_desktop.gui.widgets.earnings import EarningsLabel
from r3mes_desktop.gui.widgets.icons import status_icon
from r3mes_desktop.gui.widgets.log_view import LogModel, LogView, QtLogHandler
from r3mes_desktop.gui.widgets.status_bar import StatusBarController
from r3mes_desktop.gui.widgets.tray import AlertRouter, Tray
from r3mes_desktop.gui.widgets.tx_details import TransactionDetails
from r3mes_desktop.gui.window_layout import build_central, build_toolbar_and_menus
from r3mes_desktop.gui.window_ops import WindowOps
from r3mes_desktop.gui.window_poll import Poller
from r3mes_desktop.support.alerts import Alert, NoticeCenter, failure_reason, short_id

if TYPE_CHECKING:
    from r3mes_desktop.gui.widgets.charts import ChartsPanel
    from r3mes_desktop.gui.widgets.settings_dialog import SettingsDialog

__all__ = ["MainWindow", "RuntimePort"]

log = logging.getLogger(__name__)


class MainWindow(QtWidgets.QMainWindow):
    refreshed = Signal()  # after each poll of the coordinator (tests wait on it)
    action_reported = Signal(str)  # one-click actions say what they did
    closed = Signal()  # the window closed for good (not hidden to the tray)
    REPAINT_MS = 150  # the batch of event-driven repaints (details, status bar, tray)
    # Built by window_layout.build_central:
    tx_view: QtWidgets.QTableView
    state_filter: QtWidgets.QComboBox
    tabs: QtWidgets.QTabWidget

    def __init__(
        self,
        runtime: RuntimePort,
        *,
        tray_available: bool | None = None,
        poll_ms: int = 2000,
        log_handler: QtLogHandler | None = None,
    ) -> None:
        super().__init__()
        self.runtime = runtime
        self.setWindowTitle("R3MES Desktop")
        self.setWindowIcon(status_icon("mining"))
        self.bridge = EventBridge(runtime.bus, self)
        self.tasks = TaskRunner(self)
        self.tasks.failed.connect(self._task_failed)
        self.poller = Poller(self)
        self.window_actions = create_actions(self)
        self._quitting = False
        self._shut = False  # widgets shut down: late timers must not start core work
        self._miner_state = "idle"
        self.ops = WindowOps(self)
        self.settings_dialog: SettingsDialog | None = None
        build_toolbar_and_menus(self)
        self.banner = NoticeBanner()
        self.tx_model = TransactionsModel(self)
        self.tx_proxy = TransactionsFilter(self)
        self.tx_proxy.setSourceModel(self.tx_model)
        self.chart_data = ChartData()
        self.charts: ChartsPanel | None = None  # built once pyqtgraph is imported (load_charts)
        self.charts_host, self.charts_layout = self._charts_placeholder()
        self.breakers_model = BreakersModel(self)
        self.dead_model = DeadLettersModel(self)
        self.log_model = LogModel(self)
        self._panels: tuple[BreakersPanel, DeadLettersPanel, LogView] | None = None
        self.details = TransactionDetails()
        self.earnings = EarningsLabel()
        build_central(self)
        self._dirty: set[str] = set()
        self.repaint_timer = self._timer("window-repaint", self.REPAINT_MS, self._repaint_dirty)
        self.status = StatusBarController(
            self.statusBar(), {}, on_change=lambda: self.mark_dirty("status")
        )
        self._probe: LatencyProbe | None = None
        self._device = ""
        self._notices: NoticeCenter | None = None  # built on first use (see `notices`)
        self.tray = self._build_tray(tray_available)
        self.alerts = AlertRouter(self.banner, self.tray, preferences=self._alert_preferences)
        self._owns_handler = log_handler is None
        self.log_handler = self._attach_log_handler(log_handler)

        self._connect()
        self._ready = runtime.ready
        if self._ready:
            self.runtime_ready()
        else:
            self.window_actions.set_miner_state("starting")
            self.statusBar().showMessage("Starting the miner…")
        self.tick_timer = self._timer("window-tick", 1000, self._tick, repeat=True)
        self.poll_timer = self._timer("coordinator-poll", poll_ms, self.refresh, repeat=True)
        self._painted = False

    @staticmethod
    def _charts_placeholder() -> tuple[QtWidgets.QWidget, QtWidgets.QVBoxLayout]:
        host = QtWidgets.QWidget()
        host.setObjectName("charts-host")
        layout = QtWidgets.QVBoxLayout(host)
        layout.addWidget(QtWidgets.QLabel("Loading charts…"))
        return host, layout

    def _timer(
        self, name: str, interval_ms: int, slot: Callable[[], None], *, repeat: bool = False
    ) -> QtCore.QTimer:
        """A named timer: repeating ones start now, single-shot ones when first asked."""
        timer = QtCore.QTimer(self)
        timer.setObjectName(name)
        timer.setInterval(interval_ms)
        timer.setSingleShot(not repeat)
        timer.timeout.connect(slot)
        if repeat:
            timer.start()
        return timer

    def _build_tray(self, available: bool | None) -> Tray | None:
        if available is None:
            available = QtWidgets.QSystemTrayIcon.isSystemTrayAvailable()
        if not available:
            return None
        a = self.window_actions
        return Tray(self, start_pause=a.start_pause, finish=a.finish, quit_action=a.quit)

    def _attach_log_handler(self, given: QtLogHandler | None) -> QtLogHandler:
        """The log view's feed: the app's handler (fed by the log queue's thread) or, when
        none is given (tests, benches), one of our own on the root logger."""
        app_logger = logging.getLogger("r3mes_desktop")
        if app_logger.getEffectiveLevel() > logging.INFO:  # the log view starts at Info
            app_logger.setLevel(logging.INFO)
        handler = given or QtLogHandler()
        handler.record_emitted.connect(self.log_model.append)
        if given is None:
            logging.getLogger().addHandler(handler)
        return handler

    def paintEvent(self, event: QtGui.QPaintEvent) -> None:
        super().paintEvent(event)
        if not self._painted:  # charts load after the first paint: keeps the cold start short
            self._painted = True
            QtCore.QTimer.singleShot(0, self.ensure_panels)
            QtCore.QTimer.singleShot(250, self.load_charts)

    @property
    def notices(self) -> NoticeCenter:
        """Groups and rate-limits alerts; created lazily (core.clock imports asyncio, which
        the first paint does not need)."""
        if self._notices is None:
            self._notices = NoticeCenter()
        return self._notices

    def attach_runtime(self, runtime: RuntimePort) -> None:
        """Swap the start-up stand-in (a bus and nothing else) for the real runtime.

        The app paints the window before importing asyncio, qasync and the runtime; the
        runtime then adopts the same bus, so the bridge keeps listening.
        """
        if runtime.bus is not self.runtime.bus:
            raise ValueError("attach_runtime: the runtime must use the window's event bus")
        self.runtime = runtime

    def runtime_ready(self) -> None:
        """The runtime is open: show its endpoints and device, enable actions, poll."""
        self._ready = True
        self.status.set_endpoints(self.runtime.endpoints())
        self.status.set_device(self.runtime.device_name())
        faults = self.runtime.faults
        if faults is not None:  # its notice may have come before the bridge listened
            self.status.show_fault_plan(faults.announcement())
        decision = self.runtime.governor_decision
        if decision is not None:  # decided before the bridge listened
            self.status.on_governor(decision)
        self.statusBar().clearMessage()
        self.set_miner_state(str(self.runtime.miner.state))
        self.refresh()

    @property
    def is_ready(self) -> bool:
        """The runtime is open and the widgets are not shut down: core calls may start."""
        return self._ready

    def refresh(self) -> None:
        """Poll the coordinator once (skipped if a poll is still running)."""
        self.poller.request()

    def _alert_preferences(self) -> tuple[bool, str]:
        settings = self.runtime.settings
        if settings is None:
            return True, "info"
        return bool(settings.notify_tray), str(settings.notify_min_severity)

    def runtime_failed(self, message: str) -> None:
        self.window_actions.set_miner_state("error")
        self.window_actions.start.setEnabled(False)
        self.alerts.show(Alert(level="error", title="Could not start", message=message))

    def set_latency_probe(self, probe: LatencyProbe) -> None:
        self._probe = probe

    def bring_to_front(self) -> None:
        """A second launch asked for the window: show it, raised and focused."""
        self.showNormal()
        self.raise_()
        self.activateWindow()

    # -- layout ------------------------------------------------------------------------------
    def load_charts(self) -> None:
        """Import pyqtgraph off the GUI thread (≈0.7 s), then build the plots.

        Keeps it out of the cold start: the window paints first, the charts follow, and no
        data is lost meanwhile because `chart_data` collects from the start.
        """
        if self.charts is not None or self._shut:
            return

        async def load() -> None:
            import asyncio

            await asyncio.to_thread(importlib.import_module, "pyqtgraph")
            self.ensure_charts()

        self.tasks.spawn(load(), name="Load charts")

    def ensure_charts(self) -> ChartsPanel:
        if self.charts is None:
            from r3mes_desktop.gui.widgets.charts import ChartsPanel

            self.charts = ChartsPanel(data=self.chart_data)
            layout = self.charts_layout
            while (item := layout.takeAt(0)) is not None:
                if (placeholder := item.widget()) is not None:
                    placeholder.deleteLater()
            layout.setContentsMargins(0, 0, 0, 0)
            layout.addWidget(self.charts)
        return self.charts

    def ensure_panels(self) -> tuple[BreakersPanel, DeadLettersPanel, LogView]:
        """Build the hidden tabs' widgets (after the first paint, or on first use).

        Their models exist from the start and collect data; only the widgets wait, which
        takes ~80 ms off the cold start on a busy laptop CPU.
        """
        if self._panels is None:
            breakers = BreakersPanel(self.breakers_model)
            breakers.reset_requested.connect(self.ops.reset_breaker)
            breakers.force_open_requested.connect(self.ops.force_open_breaker)
            dead = DeadLettersPanel(self.dead_model)
            dead.retry_requested.connect(self.ops.retry_dead_letters)
            dead.discard_requested.connect(self.ops.discard_dead_letters)
            log_view = LogView(self.log_model)
            self._panels = (breakers, dead, log_view)
            current = self.tabs.currentIndex()
            for index, (widget, title) in enumerate(
                ((breakers, "Circuit breakers"), (dead, "Dead letters"), (log_view, "Log")),
                start=1,
            ):
                placeholder = self.tabs.widget(index)
                self.tabs.removeTab(index)
                self.tabs.insertTab(index, widget, title)
                if placeholder is not None:
                    placeholder.deleteLater()
            self.tabs.setCurrentIndex(current)
        return self._panels

    @property
    def breakers_panel(self) -> BreakersPanel:
        return self.ensure_panels()[0]

    @property
    def dead_panel(self) -> DeadLettersPanel:
        return self.ensure_panels()[1]

    @property
    def log_view(self) -> LogView:
        return self.ensure_panels()[2]

    # -- wiring --------------------------------------------------------------------------
    def _connect(self) -> None:
        a, b = self.window_actions, self.bridge
        self.ops.connect()
        a.quit.triggered.connect(self.quit)

        b.any_event.connect(self._on_event)
        b.transaction_changed.connect(self.tx_model.apply_event)
        b.step_progress.connect(self.tx_model.apply_event)
        b.step_progress.connect(self.chart_data.add_event)
        b.step_progress.connect(self._device_from_progress)
        b.transaction_changed.connect(self.chart_data.add_event)
        b.retry_scheduled.connect(self.tx_model.apply_event)
        b.retry_scheduled.connect(self.status.on_retry)
        b.notice.connect(self.status.on_notice)
        b.compensation.connect(self.tx_model.apply_event)
        b.breaker_changed.connect(self.breakers_model.apply_event)
        b.breaker_changed.connect(self.status.on_breaker)
        b.stats_changed.connect(self._on_stats)
        b.verdict_recorded.connect(self.tx_model.apply_event)
        b.verdict_recorded.connect(self.chart_data.add_event)
        b.verdict_recorded.connect(self.earnings.on_verdict)
        b.model_version_published.connect(self.chart_data.add_event)
        b.model_version_published.connect(self._on_model_version)
        b.miner_state_changed.connect(self._on_miner_state)
        b.governor_changed.connect(self.status.on_governor)

    def _on_stats(self, event: StatsChanged) -> None:
        self.chart_data.add_stats(event.stats)

    def _on_model_version(self, _event: ModelVersionPublished) -> None:
        """A new version settles the fate of the updates of its round and of the rounds
        that trained on its parent: read the journal's statuses now, not at the next tick."""
        QtCore.QTimer.singleShot(0, self.refresh)

    def _on_miner_state(self, event: MinerStateChanged) -> None:
        self.set_miner_state(event.new_state)

    # -- commands --------------------------------------------------------------------------
    def report(self, outcome: Outcome) -> None:
        """Say what a one-click action did: status bar, notice, log."""
        text, level = outcome.text, outcome.level
        log.log(logging.WARNING if level == "warning" else logging.INFO, "%s", text)
        self.statusBar().showMessage(text, 20000)
        self.alerts.show(Alert(level=level, title="Done", message=text))
        self.action_reported.emit(text)

    # -- events ----------------------------------------------------------------------------
    def _on_event(self, event: Event) -> None:
        tx_id = getattr(event, "transaction_id", None)
        if (
            tx_id is not None
            and tx_id == self.details.current_id
            and not isinstance(event, StepProgress)
        ):
            self.mark_dirty("details")  # progress (many per second) waits for the 1 s tick
        alert = self.notices.on_event(event)
        if alert is not None:
            self.alerts.show(alert)
        if isinstance(event, TransactionStateChanged) and TxState(event.new_state) in TERMINAL:
            self._log_outcome(event)
            QtCore.QTimer.singleShot(0, self.refresh)
        self.mark_dirty("tray")

    def mark_dirty(self, part: str) -> None:
        """Ask for `part` ("details", "status", "tray") to be repainted with the next batch.

        Events arrive in bursts (a saga step publishes several, a retry storm dozens);
        repainting per event rebuilt the details HTML and the tray icon each time. One
        single-shot timer repaints every dirty part once per `REPAINT_MS`.
        """
        self._dirty.add(part)
        if not self.repaint_timer.isActive():
            self.repaint_timer.start()

    def _repaint_dirty(self) -> None:
        dirty, self._dirty = self._dirty, set()
        if "details" in dirty:
            self._show_selected()
        if "status" in dirty:
            self.status.refresh()
        if "tray" in dirty or "status" in dirty:  # the tray repeats the status bar's problem
            self._update_tray()

    def _device_from_progress(self, event: StepProgress) -> None:
        device = event.detail.get("device")
        if device and device != self._device:
            self._device = str(device)
            self.status.set_device(self._device.upper() if self._device == "cpu" else self._device)

    def _log_outcome(self, event: TransactionStateChanged) -> None:
        """One line per finished transaction in the log (and the log view)."""
        state = event.new_state.replace("_", " ")
        who = f"transaction {short_id(event.transaction_id)} (round {event.round_id})"
        if state == "committed":
            log.info("%s committed", who)
        else:
            cause = failure_reason(
                event.failed_step.upper() if event.failed_step else None,
                event.error_category,
                event.error_message,
            )
            log.warning("%s %s: %s", who, state, cause)

    def _show_selected(self) -> None:
        tx_id = self.details.current_id
        row = self.tx_model.row(tx_id) if tx_id else None
        if row is not None:  # live fields now; the journal history follows on the poll
            self.details.show_row(row, self.details.history_for(row.transaction_id, row))

    def _tick(self) -> None:
        self.tx_model.tick()
        self._show_selected()
        self.breakers_model.tick()
        self.status.refresh()
        for alert in self.notices.flush():
            self.alerts.show(alert)
        if self._probe is not None:
            self.status.set_loop_figures(f"loop p99 {self._probe.summary().p99_ms:.0f} ms")
        self._update_tray()

    def _update_tray(self) -> None:
        if self.tray is None:
            return
        governed = self.status.governed
        if self.status.problem_text():
            self.tray.set_status("error", self.status.problem_text())
        elif not governed.may_run:
            self.tray.set_status("idle", governed.text)
        elif self._miner_state in ("mining", "pausing", "stopping"):
            held = governed.text  # devices held back alone while the rest mine
            self.tray.set_status("mining", f"mining; {held}" if held else "mining")
        else:
            self.tray.set_status("idle", self._miner_state)

    def set_miner_state(self, state: str) -> None:
        """`state`: a core.miner.MinerState value, "starting" or "error"."""
        self._miner_state = state
        self.window_actions.set_miner_state(self._miner_state)
        self._update_tray()

    @property
    def miner_state(self) -> str:
        return self._miner_state

    def _selection_changed(
        self, current: QtCore.QModelIndex, _previous: QtCore.QModelIndex
    ) -> None:
        tx_id = (
            self.tx_proxy.data(current, TransactionsModel.ID_ROLE) if current.isValid() else None
        )
        row = self.tx_model.row(tx_id) if tx_id else None
        self.details.show_row(row)
        if row is None:
            return

        async def load() -> None:
            status = await self.runtime.coordinator.status(row.transaction_id)
            if status is not None and self.details.current_id == row.transaction_id:
                self.details.show_status(row, status)

        self.tasks.spawn(load(), name="Load transaction details")

    def _task_failed(self, name: str, message: str) -> None:
        self.alerts.show(Alert(level="error", title=f"{name} failed", message=message))

    # -- closing ---------------------------------------------------------------------------
    def quit(self) -> None:
        self._quitting = True
        self.close()

    def closeEvent(self, event: QtGui.QCloseEvent) -> None:
        if self.tray is not None and not self._quitting:
            self.hide()
            self.tray.icon.showMessage(
                "R3MES Desktop",
                "Still mining in the tray. Quit from the tray menu.",
                QtWidgets.QSystemTrayIcon.MessageIcon.Information,
                4000,
            )
            event.ignore()
            return
        self.shutdown_widgets()
        event.accept()
        self.closed.emit()

    def shutdown_widgets(self) -> None:
        """Stop timers and listeners; the runtime itself is closed by the app."""
        self._shut = True
        self._ready = False  # a refresh queued by a last event must not poll a closing core
        self.tick_timer.stop()
        self.poll_timer.stop()
        self.repaint_timer.stop()
        if self.charts is not None:
            self.charts.redraw_timer.stop()
        self.bridge.close()
        if self._owns_handler:
            logging.getLogger().removeHandler(self.log_handler)
        if self.tray is not None:
            self.tray.icon.hide()
