"""Charts (pyqtgraph): errors by category, outcome rates, throughput, credits earned over
time, the miner's training loss beside the network model's held-out loss per version, PoW
hash rate, and the totals beside them.

Events and statistics only update `ChartData` (a version per plot); a named timer redraws
when something changed, never once per event. A full redraw of five plots is one long
paint (tens of ms on a busy laptop CPU, measured as p99 loop stalls of 140 ms while the
workers used every core), so each timer tick refreshes ONE plot whose data changed, each
plot at most every `min_interval_s`, and nothing is redrawn while the charts are not on
screen. Axis ranges are set by hand and move in coarse steps (`coarse_range`): with
auto-range every new point moved the axes, and pyqtgraph re-laid out their ticks and
labels in Python on every paint (measured: paints of 15-48 ms, most of the loop stalls
left while mining once the devnet's EVM had moved to its own process).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pyqtgraph as pg

from r3mes_desktop.core.events import Event
from r3mes_desktop.gui.models.chart_data import (
    CATEGORIES,
    CATEGORY_COLOURS,
    CATEGORY_LABELS,
    PARTS,
    ChartData,
)
from r3mes_desktop.gui.qt import QtCore, QtWidgets

NETWORK_TITLE = "Network model"
X_MIN_STEP_S = 10.0  # time axes move in steps of at least 10 s (a quarter of the span later)
CREDITS_MIN_STEP_S = 60.0  # the credits' wall-clock axis: minutes, at least


def _xy(points: deque[tuple[float, float]]) -> tuple[list[float], list[float]]:
    return [p[0] for p in points], [p[1] for p in points]


def nice_step(value: float) -> float:
    """The smallest 1, 2 or 5 × 10^k that is ≥ `value` (> 0)."""
    power = 10.0 ** math.floor(math.log10(value))
    for factor in (1.0, 2.0, 5.0, 10.0):
        if factor * power >= value * (1 - 1e-9):
            return factor * power
    return 10.0 * power


def coarse_range(
    values: Sequence[float], *, min_step: float, from_zero: bool = False
) -> tuple[float, float]:
    """An axis range around `values` in whole steps of a round size (a quarter of the span
    or more), so it stays put while new points arrive and the axis is not re-laid out."""
    if not values:
        return 0.0, nice_step(min_step)
    lo = min(0.0, min(values)) if from_zero else min(values)
    hi = max(values)
    step = nice_step(max(min_step, (hi - lo) / 4.0))
    lo_q = math.floor(lo / step) * step
    hi_q = math.ceil(hi / step) * step
    return lo_q, hi_q if hi_q > lo_q else lo_q + step


class ChartsPanel(QtWidgets.QWidget):
    """Seven small plots and the totals; redrawn by `redraw_timer` only when `data.dirty`."""

    def __init__(
        self,
        parent: QtWidgets.QWidget | None = None,
        *,
        data: ChartData | None = None,
        refresh_ms: int = 200,
        min_interval_s: float = 2.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(parent)
        pg.setConfigOptions(antialias=False, background="w", foreground="#333")
        self.data = data if data is not None else ChartData()
        self.redraws = 0
        self.min_interval_s = min_interval_s
        self._monotonic = monotonic
        self._drawn: dict[str, int] = dict.fromkeys(PARTS, -1)  # data version last drawn
        self._drawn_at: dict[str, float] = dict.fromkeys(PARTS, -math.inf)
        self._ranges: dict[tuple[int, str], tuple[float, float]] = {}
        grid = QtWidgets.QGridLayout(self)
        grid.setContentsMargins(2, 2, 2, 2)
        grid.setSpacing(4)

        self.errors_plot, self._bars = self._errors_plot()
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
        # x = version id: the loss each published version reached on held-out text
        self.network_plot = self._plot(NETWORK_TITLE, "loss")
        self.network_plot.setToolTip(
            "Held-out loss (nats per token) of each network model version the aggregators "
            "published, by version; the miner trains each round from the version it names"
        )
        self._network_curve = self.network_plot.plot(
            pen=pg.mkPen("#ad1457", width=2),
            symbol="o",
            symbolSize=5,
            symbolPen=None,
            symbolBrush="#ad1457",
        )
        self.hash_plot = self._plot("PoW hash rate", "MH/s")
        self._hash_curve = self.hash_plot.plot(pen=pg.mkPen("#00838f", width=2))
        # Wall-clock axis: the series comes from the journal, so it starts before the window
        self.credits_plot = self._plot("Credits earned", "credits", axis=pg.DateAxisItem())
        self._credits_curve = self.credits_plot.plot(
            pen=pg.mkPen("#2e7d32", width=2), stepMode="left"
        )

        self.summary = self._summary_label()
        # Five columns; the error bars keep two, so their six category labels still fit
        # side by side at 1280 pixels; the totals take the last column's two rows, and the
        # network model's loss sits beside the training loss.
        grid.addWidget(self.errors_plot, 0, 0, 1, 2)
        grid.addWidget(self.rates_plot, 0, 2)
        grid.addWidget(self.throughput_plot, 0, 3)
        grid.addWidget(self.summary, 0, 4, 2, 1)
        for col, widget in enumerate(
            (self.credits_plot, self.loss_plot, self.network_plot, self.hash_plot)
        ):
            grid.addWidget(widget, 1, col)
        for col in range(5):
            grid.setColumnStretch(col, 1)

        self.redraw_timer = QtCore.QTimer(self)
        self.redraw_timer.setObjectName("charts-redraw")
        self.redraw_timer.setInterval(refresh_ms)
        self.redraw_timer.timeout.connect(self.redraw_if_dirty)
        self.redraw_timer.start()

    @staticmethod
    def _summary_label() -> QtWidgets.QLabel:
        label = QtWidgets.QLabel()
        label.setObjectName("charts-summary")
        label.setAlignment(QtCore.Qt.AlignmentFlag.AlignTop | QtCore.Qt.AlignmentFlag.AlignLeft)
        label.setStyleSheet("background: white; padding: 8px; color: #333;")
        label.setWordWrap(True)
        # Its text changes with every statistics poll; a size hint that follows the text
        # re-laid out the whole grid, plots included (LayoutRequest stalls up to 51 ms).
        ignored = QtWidgets.QSizePolicy.Policy.Ignored
        label.setSizePolicy(ignored, ignored)
        return label

    def _errors_plot(self) -> tuple[pg.PlotWidget, pg.BarGraphItem]:
        plot = self._plot("Errors by category", "count")
        bars = pg.BarGraphItem(
            x=list(range(len(CATEGORIES))),
            height=[0] * len(CATEGORIES),
            width=0.7,
            brushes=list(CATEGORY_COLOURS),
        )
        plot.addItem(bars)
        plot.getAxis("bottom").setTicks([list(enumerate(CATEGORY_LABELS))])
        plot.setToolTip(
            "Errors by category: "
            + ", ".join(
                name if short == name else f"{short} = {name}"
                for short, name in zip(CATEGORY_LABELS, CATEGORIES, strict=True)
            )
        )
        plot.setXRange(-0.6, len(CATEGORIES) - 0.4, padding=0)
        plot.setYRange(0, 1, padding=0)
        plot.setMouseEnabled(x=False, y=False)
        return plot, bars

    def _plot(self, title: str, unit: str, *, axis: pg.AxisItem | None = None) -> pg.PlotWidget:
        plot = pg.PlotWidget() if axis is None else pg.PlotWidget(axisItems={"bottom": axis})
        plot.setTitle(title, size="9pt")
        plot.setLabel("left", unit)
        plot.setMinimumSize(180, 120)
        plot.showGrid(x=True, y=True, alpha=0.2)
        plot.setMenuEnabled(False)
        plot.hideButtons()
        plot.getAxis("left").enableAutoSIPrefix(False)
        for side in ("left", "bottom"):
            axis = plot.getAxis(side)
            # No text-space re-layout on every new range.
            axis.setStyle(autoExpandTextSpace=False, autoReduceTextSpace=False)
            # A new point repaints the whole plot; without a cache each axis replayed its
            # ticks, labels and grid lines (a QPicture) on every such paint: py-spy put
            # most of the loop's long stalls while mining in AxisItem.paint. Cached, an
            # unchanged axis is one pixmap copy; a range change re-renders it once.
            axis.setCacheMode(QtWidgets.QGraphicsItem.CacheMode.DeviceCoordinateCache)
        plot.getAxis("left").setWidth(48)
        plot.setMouseEnabled(x=False, y=False)
        # At most `points` (600) samples: downsampling and clipping cost more than they save.
        plot.setDownsampling(auto=False)
        plot.setClipToView(False)
        plot.disableAutoRange()
        return plot

    def add_event(self, event: Event) -> None:
        self.data.add_event(event)

    def add_stats(self, stats: Mapping[str, Any]) -> None:
        self.data.add_stats(stats)

    def error_heights(self) -> list[int]:
        """What the error bar chart currently draws (tests check the chart, not only data)."""
        heights = self._bars.opts.get("height")
        return [int(h) for h in heights] if heights is not None else []

    PARTS = PARTS

    def redraw_if_dirty(self, *, everything: bool = False) -> None:
        """One timer tick: redraw the changed part that waited longest, if it is due (all
        changed parts at once with `everything`, e.g. before a screenshot)."""
        if not (everything or self.isVisible()):
            return
        versions = self.data.versions
        now = self._monotonic()
        changed = [p for p in PARTS if versions[p] != self._drawn[p]]
        if not everything:
            due = [p for p in changed if now - self._drawn_at[p] >= self.min_interval_s]
            changed = sorted(due, key=lambda p: self._drawn_at[p])[:1]
        if not changed:
            return
        for part in changed:
            self._drawn[part], self._drawn_at[part] = versions[part], now
            self._draw(part)
        self.redraws += 1

    def _set_range(self, plot: pg.PlotWidget, axis: str, lo_hi: tuple[float, float]) -> None:
        """Move an axis only when its coarse range changed (a move re-lays out its ticks)."""
        key = (id(plot), axis)
        if self._ranges.get(key) == lo_hi:
            return
        self._ranges[key] = lo_hi
        if axis == "x":
            plot.setXRange(*lo_hi, padding=0)
        else:
            plot.setYRange(*lo_hi, padding=0)

    def _time_series(
        self,
        plot: pg.PlotWidget,
        xs: list[float],
        ys: list[float],
        *,
        from_zero: bool,
        x_min_step: float = X_MIN_STEP_S,
    ) -> None:
        self._set_range(plot, "x", coarse_range(xs, min_step=x_min_step))
        self._y_range(plot, ys, from_zero=from_zero)

    def _draw(self, part: str) -> None:
        data = self.data
        if part == "errors":
            heights = [data.errors[c] for c in CATEGORIES]
            self._bars.setOpts(height=heights)
            self._set_range(self.errors_plot, "y", (0, max(1, *heights) * 1.1))
        elif part == "rates":
            xs: list[float] = []
            for name, curve in self._rate_curves.items():
                xs, ys = _xy(data.rates[name])
                curve.setData(xs, ys)
            self._set_range(self.rates_plot, "x", coarse_range(xs, min_step=X_MIN_STEP_S))
        elif part == "throughput":
            xs, ys = _xy(data.throughput)
            self._throughput_curve.setData(xs, ys)
            self._time_series(self.throughput_plot, xs, ys, from_zero=True)
        elif part == "loss":
            xs, ys = _xy(data.loss)
            self._loss_curve.setData(xs, ys)
            self._time_series(self.loss_plot, xs, ys, from_zero=False)
        elif part == "network":
            self._draw_network()
        elif part == "credits":
            xs, ys = _xy(data.credits)
            now = data.now()
            if xs:  # from 0 at the first verdict; the total holds until now
                xs, ys = [xs[0], *xs, max(now, xs[-1])], [0.0, *ys, ys[-1]]
            self._credits_curve.setData(xs, ys)
            self._time_series(
                self.credits_plot,
                xs or [now - CREDITS_MIN_STEP_S, now],
                ys,
                from_zero=True,
                x_min_step=CREDITS_MIN_STEP_S,
            )
            self.credits_plot.setTitle(f"Credits earned: {data.credits_total:,}", size="9pt")
        elif part == "hash":
            xs, ys = _xy(data.hash_rate)
            ys = [y / 1e6 for y in ys]  # fits the fixed-width axis
            self._hash_curve.setData(xs, ys)
            self._time_series(self.hash_plot, xs, ys, from_zero=True)
        else:
            html = summary_html(data)
            if html != self.summary.text():
                self.summary.setText(html)

    def _draw_network(self) -> None:
        xs, ys = self.data.network_series()
        self._network_curve.setData(xs, ys)
        lo, hi = coarse_range(xs or [0.0, 1.0], min_step=1.0)
        step = nice_step(max(1.0, (hi - lo) / 4.0))
        if self._ranges.get((id(self.network_plot), "x")) != (lo - 0.5, hi + 0.5):
            # whole versions only: no tick at version 2.5
            self.network_plot.getAxis("bottom").setTickSpacing(levels=[(step, 0.0)])
        # half a version of margin, so the first and last points are not cut in half
        self._set_range(self.network_plot, "x", (lo - 0.5, hi + 0.5))
        self._y_range(self.network_plot, ys, from_zero=False)
        title = f"{NETWORK_TITLE}: v{int(xs[-1])}, loss {ys[-1]:.4f}" if xs else NETWORK_TITLE
        self.network_plot.setTitle(title, size="9pt")

    def _y_range(self, plot: pg.PlotWidget, ys: list[float], *, from_zero: bool) -> None:
        peak = max((abs(y) for y in ys), default=0.0)
        if not peak:  # no point yet, or only zeros: 0..1, not ticks (0.0008) that overrun
            self._set_range(plot, "y", (0.0, 1.0))
            return
        min_step = max(1e-3, 0.05 * peak)
        self._set_range(plot, "y", coarse_range(ys, min_step=min_step, from_zero=from_zero))


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
        ("Network model version", _model_text(st)),
        ("Your updates aggregated", f"{st.get('updates_aggregated', 0)}"),
    ]
    body = "".join(f"<tr><td>{k}</td><td align='right'><b>{v}</b></td></tr>" for k, v in rows)
    return f"<b>Totals</b><table width='100%' cellspacing='2'>{body}</table>"


def _model_text(stats: Mapping[str, Any]) -> str:
    version = int(stats.get("model_version") or 0)
    loss = stats.get("model_eval_loss")
    if not version or loss is None:
        return "genesis"
    return f"{version} (loss {float(loss):.3f})"
