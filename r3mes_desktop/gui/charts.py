"""Charts (pyqtgraph): errors by category, outcome rates, throughput, loss, PoW hash rate.

Events and statistics only update `ChartData` and set a dirty flag; a named timer redraws
when something changed, never once per event. A full redraw of five plots is one long
paint (tens of ms on a busy laptop CPU, measured as p99 loop stalls of 140 ms while the
workers used every core), so each timer tick refreshes ONE plot, round robin, and nothing
is redrawn while the charts are not on screen.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

import pyqtgraph as pg

from r3mes_desktop.core.events import Event
from r3mes_desktop.gui.chart_data import CATEGORIES, CATEGORY_COLOURS, ChartData
from r3mes_desktop.gui.qt import QtCore, QtWidgets


def _xy(points: deque[tuple[float, float]]) -> tuple[list[float], list[float]]:
    return [p[0] for p in points], [p[1] for p in points]


class ChartsPanel(QtWidgets.QWidget):
    """Five small plots; redrawn by `redraw_timer` only when `data.dirty`."""

    def __init__(
        self,
        parent: QtWidgets.QWidget | None = None,
        *,
        data: ChartData | None = None,
        refresh_ms: int = 200,
    ) -> None:
        super().__init__(parent)
        pg.setConfigOptions(antialias=False, background="w", foreground="#333")
        self.data = data if data is not None else ChartData()
        self.data.dirty = True
        self.redraws = 0
        self._pending: list[str] = []
        grid = QtWidgets.QGridLayout(self)
        grid.setContentsMargins(2, 2, 2, 2)
        grid.setSpacing(4)

        self.errors_plot = self._plot("Errors by category", "count")
        self._bars = pg.BarGraphItem(
            x=list(range(len(CATEGORIES))),
            height=[0] * len(CATEGORIES),
            width=0.7,
            brushes=list(CATEGORY_COLOURS),
        )
        self.errors_plot.addItem(self._bars)
        axis = self.errors_plot.getAxis("bottom")
        axis.setTicks([[(i, c[:4]) for i, c in enumerate(CATEGORIES)]])
        self.errors_plot.setXRange(-0.6, len(CATEGORIES) - 0.4, padding=0)
        self.errors_plot.setYRange(0, 1, padding=0)
        self.errors_plot.setMouseEnabled(x=False, y=False)

        self.rates_plot = self._plot("Outcome rate", "share")
        legend = self.rates_plot.addLegend(offset=(-5, -5), labelTextSize="7pt")
        legend.setBrush(pg.mkBrush(255, 255, 255, 210))
        self.rates_plot.setYRange(0, 1.05, padding=0)
        self._rate_curves = {
            "success": self.rates_plot.plot(name="success", pen=pg.mkPen("#2e7d32", width=2)),
            "failure": self.rates_plot.plot(name="failure", pen=pg.mkPen("#c62828", width=2)),
            "rollback": self.rates_plot.plot(name="rollback", pen=pg.mkPen("#ef6c00", width=2)),
        }
        self.throughput_plot = self._plot("Throughput", "tx/min")
        self._throughput_curve = self.throughput_plot.plot(pen=pg.mkPen("#1565c0", width=2))
        self.loss_plot = self._plot("Training loss", "loss")
        self._loss_curve = self.loss_plot.plot(pen=pg.mkPen("#6a1b9a", width=2))
        self.hash_plot = self._plot("PoW hash rate", "MH/s")
        self._hash_curve = self.hash_plot.plot(pen=pg.mkPen("#00838f", width=2))

        self.summary = QtWidgets.QLabel()
        self.summary.setObjectName("charts-summary")
        self.summary.setAlignment(
            QtCore.Qt.AlignmentFlag.AlignTop | QtCore.Qt.AlignmentFlag.AlignLeft
        )
        self.summary.setStyleSheet("background: white; padding: 8px; color: #333;")
        self.summary.setWordWrap(True)
        grid.addWidget(self.summary, 1, 2)
        for pos, plot in enumerate(
            (
                self.errors_plot,
                self.rates_plot,
                self.throughput_plot,
                self.loss_plot,
                self.hash_plot,
            )
        ):
            grid.addWidget(plot, pos // 3, pos % 3)

        self.redraw_timer = QtCore.QTimer(self)
        self.redraw_timer.setObjectName("charts-redraw")
        self.redraw_timer.setInterval(refresh_ms)
        self.redraw_timer.timeout.connect(self.redraw_if_dirty)
        self.redraw_timer.start()

    def _plot(self, title: str, unit: str) -> pg.PlotWidget:
        plot = pg.PlotWidget()
        plot.setTitle(title, size="9pt")
        plot.setLabel("left", unit)
        plot.setMinimumSize(180, 120)
        plot.showGrid(x=True, y=True, alpha=0.2)
        plot.setMenuEnabled(False)
        plot.hideButtons()
        plot.getAxis("left").enableAutoSIPrefix(False)
        for side in ("left", "bottom"):  # no text-space re-layout on every new range
            plot.getAxis(side).setStyle(autoExpandTextSpace=False, autoReduceTextSpace=False)
        plot.getAxis("left").setWidth(48)
        plot.setMouseEnabled(x=False, y=False)
        plot.setDownsampling(auto=True, mode="peak")
        plot.setClipToView(True)
        return plot

    def add_event(self, event: Event) -> None:
        self.data.add_event(event)

    def add_stats(self, stats: Mapping[str, Any]) -> None:
        self.data.add_stats(stats)

    def error_heights(self) -> list[int]:
        """What the error bar chart currently draws (tests check the chart, not only data)."""
        heights = self._bars.opts.get("height")
        return [int(h) for h in heights] if heights is not None else []

    PARTS = ("errors", "rates", "throughput", "loss", "hash", "summary")

    def redraw_if_dirty(self, *, everything: bool = False) -> None:
        """One timer tick: queue every part if data changed, then refresh one part
        (all of them with `everything`, e.g. before a screenshot)."""
        if self.data.dirty:
            self.data.dirty = False
            self._pending += [p for p in self.PARTS if p not in self._pending]
        if not self._pending or not (everything or self.isVisible()):
            return
        if everything:
            parts, self._pending = self._pending, []
        else:
            parts, self._pending = self._pending[:1], self._pending[1:]
        for part in parts:
            self._draw(part)
        self.redraws += 1

    def _draw(self, part: str) -> None:
        data = self.data
        if part == "errors":
            heights = [data.errors[c] for c in CATEGORIES]
            self._bars.setOpts(height=heights)
            self.errors_plot.setYRange(0, max(1, *heights) * 1.1, padding=0)
        elif part == "rates":
            for name, curve in self._rate_curves.items():
                curve.setData(*_xy(data.rates[name]))
        elif part == "throughput":
            self._throughput_curve.setData(*_xy(data.throughput))
        elif part == "loss":
            self._loss_curve.setData(*_xy(data.loss))
        elif part == "hash":
            xs, ys = _xy(data.hash_rate)
            self._hash_curve.setData(xs, [y / 1e6 for y in ys])  # fits the fixed-width axis
        else:
            self.summary.setText(summary_html(data))


def summary_html(data: ChartData) -> str:
    """The totals beside the plots, from the latest statistics (journal-derived)."""
    st = data.last_stats
    if not st:
        return "<b>Totals</b><br>waiting for the first statistics…"
    rows = [
        ("Transactions", f"{st.get('total_transactions', 0)}"),
        ("Committed", f"{st.get('committed_transactions', 0)}"),
        ("Rolled back", f"{st.get('rolled_back_transactions', 0)}"),
        ("Failed (all)", f"{st.get('failed_transactions', 0)}"),
        ("Success rate", f"{100 * float(st.get('success_rate', 0.0)):.1f} %"),
        ("Recent throughput", f"{data.recent_throughput():.1f} tx/min"),
        (
            "Commit time p50 / p95",
            f"{float(st.get('commit_time_p50_s', 0.0)):.1f} s / "
            f"{float(st.get('commit_time_p95_s', 0.0)):.1f} s",
        ),
        ("Task completions pending", f"{st.get('pending_task_completions', 0)}"),
        ("Open dead letters", f"{st.get('open_dead_letters', 0)}"),
    ]
    body = "".join(f"<tr><td>{k}</td><td align='right'><b>{v}</b></td></tr>" for k, v in rows)
    return f"<b>Totals</b><table width='100%' cellspacing='2'>{body}</table>"
