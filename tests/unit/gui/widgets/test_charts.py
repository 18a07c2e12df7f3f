"""Charts redraw only what changed, at most one plot per tick and each plot at most every
`min_interval_s`, on axes that stay put while points arrive (a moved axis is re-laid out
in Python on the next paint: the loop stalls bench.gui measured while mining); the credits
earned are drawn over wall-clock time."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from r3mes_desktop.core.events import ModelVersionPublished, StepProgress, VerdictRecorded
from r3mes_desktop.core.records import ModelVersion
from r3mes_desktop.gui.models.chart_data import ChartData
from r3mes_desktop.gui.qt import QtGui, QtWidgets
from r3mes_desktop.gui.widgets.charts import ChartsPanel, coarse_range, nice_step, summary_html


class Ticks:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _loss(data: ChartData, t: float, loss: float) -> None:
    data.add_event(
        StepProgress(
            transaction_id="tx", step="training", fraction=0.5, detail={"loss": loss}, ts=t
        )
    )


def _panel(qtbot: Any, data: ChartData, clock: Ticks) -> ChartsPanel:
    panel = ChartsPanel(data=data, min_interval_s=2.0, monotonic=clock)
    panel.redraw_timer.stop()  # the test drives the ticks
    qtbot.addWidget(panel)
    panel.show()
    panel.redraw_if_dirty(everything=True)
    return panel


def test_only_changed_plots_redraw_one_per_tick_and_not_too_often(qtbot: Any) -> None:
    data, clock = ChartData(clock=lambda: 0.0), Ticks()
    panel = _panel(qtbot, data, clock)
    drawn = panel.redraws
    clock.now += 10
    panel.redraw_if_dirty()
    assert panel.redraws == drawn  # nothing changed: nothing painted
    _loss(data, 1.0, 2.5)
    data.add_stats({"total_transactions": 1, "committed_transactions": 1}, ts=1.0)
    changed = {"loss", "rates", "throughput", "summary"}
    seen = set()
    for _ in range(len(changed)):
        before = dict(panel._drawn)
        panel.redraw_if_dirty()
        seen |= {p for p in panel.PARTS if panel._drawn[p] != before[p]}
        assert panel.redraws == drawn + len(seen)  # one plot per tick
    assert seen == changed
    _loss(data, 2.0, 2.4)
    panel.redraw_if_dirty()
    assert panel._drawn["loss"] != data.versions["loss"]  # drawn < 2 s ago: waits
    clock.now += 2.0
    panel.redraw_if_dirty()
    assert panel._drawn["loss"] == data.versions["loss"]
    _, ys = panel._loss_curve.getData()
    assert list(ys) == [2.5, 2.4]


def test_axes_stay_put_while_points_arrive_inside_their_coarse_range(qtbot: Any) -> None:
    data, clock = ChartData(clock=lambda: 0.0), Ticks()
    panel = _panel(qtbot, data, clock)
    ranges = []
    for i in range(1, 40):
        _loss(data, float(i), 3.0 - i * 0.01)
        clock.now += 2.0
        panel.redraw_if_dirty()
        ranges.append(panel.loss_plot.getViewBox().viewRange())
    x_ranges = sorted({tuple(r[0]) for r in ranges})
    assert x_ranges == [(0, 10), (0, 20), (0, 30), (0, 40)]  # 39 new points, 4 x ranges
    y_ranges = {tuple(round(v, 6) for v in r[1]) for r in ranges}
    assert len(y_ranges) <= 3  # the loss fell by 0.39: the y axis moved at most twice
    lo, hi = ranges[-1][1]
    assert lo <= 2.61 and hi >= 2.99  # and shows every point


def test_coarse_ranges_are_round_and_cover_the_values() -> None:
    assert [nice_step(v) for v in (60, 0.25, 1, 3e-3, 7)] == [100, 0.5, 1, 5e-3, 10]
    assert coarse_range([0, 5, 130], min_step=60) == (0, 200)
    assert coarse_range([2.3, 4.7, 5.1], min_step=1e-3) == (2, 6)
    assert coarse_range([], min_step=60) == (0, 100)
    assert coarse_range([0.4, 0.2], min_step=1e-3, from_zero=True) == pytest.approx((0, 0.4))


def test_error_categories_are_labelled_in_words_that_fit(qtbot: Any) -> None:
    panel = _panel(qtbot, ChartData(clock=lambda: 0.0), Ticks())
    panel.resize(1280, 400)  # the main window's width: each plot gets about a third
    axis = panel.errors_plot.getAxis("bottom")
    labels = [label for _, label in axis._tickLevels[0]]
    assert labels == ["network", "auth", "resource", "invalid", "perm.", "unknown"]
    qtbot.waitUntil(lambda: axis.geometry().width() > 300)  # laid out at that width
    pitch = axis.geometry().width() / len(labels)  # one category's share of the axis
    metrics = QtGui.QFontMetrics(axis.style.get("tickFont") or panel.font())
    widths = [metrics.horizontalAdvance(label) for label in labels]
    # neighbours, centred one pitch apart, keep a gap; the last, centred in its own pitch,
    # stays on the axis
    assert all((a + b) / 2 + 8 < pitch for a, b in itertools.pairwise(widths))
    assert widths[-1] < pitch, (widths, pitch)
    tip = panel.errors_plot.toolTip()
    assert "auth = authentication" in tip and "perm. = permanent" in tip


def test_empty_plots_start_on_a_unit_range_whose_ticks_fit(qtbot: Any) -> None:
    data = ChartData(clock=lambda: 0.0)
    data.add_stats({"total_transactions": 0, "committed_transactions": 0}, ts=1.0)
    panel = _panel(qtbot, data, Ticks())
    assert data.throughput  # a first point, at 0 tx/min
    for plot in (panel.throughput_plot, panel.loss_plot, panel.hash_plot):
        (_, _), (lo, hi) = plot.viewRange()
        assert (lo, hi) == (0.0, 1.0)  # not 0..0.001, whose "0.0008" overran the axis label


def test_a_new_point_does_not_repaint_unchanged_axes(qtbot: Any, monkeypatch: Any) -> None:
    """A new point repaints its plot; the axes (ticks, labels, grid) come from a cache
    unless their range moved, instead of being replayed on every such paint."""
    import pyqtgraph as pg

    data, clock = ChartData(clock=lambda: 0.0), Ticks()
    panel = _panel(qtbot, data, clock)
    panel.resize(1280, 330)
    _loss(data, 1.0, 2.5)
    panel.redraw_if_dirty(everything=True)
    qtbot.wait(100)  # painted once for these ranges
    painted: list[str] = []
    paint = pg.AxisItem.paint
    monkeypatch.setattr(
        pg.AxisItem, "paint", lambda axis, *a: (painted.append(axis.orientation), paint(axis, *a))
    )
    ranges = panel.loss_plot.viewRange()
    for step in range(2, 7):  # inside the coarse x range (0..10) and y range
        _loss(data, float(step), 2.5 - (step % 2) / 100)
        clock.now += 10
        panel.redraw_if_dirty(everything=True)
        qtbot.wait(50)  # Qt paints what the new point changed
    assert panel.loss_plot.viewRange() == ranges
    assert painted == []


def _verdict(credits: int, ts: float) -> VerdictRecorded:
    return VerdictRecorded(
        transaction_id="tx",
        round_id=1,
        verdict="accepted" if credits else "rejected",
        reason=0 if credits else 5,
        reason_text="",
        credits=credits,
        block_number=1,
        validator="0x" + "cd" * 20,
        ts=ts,
    )


def test_credits_over_time_come_from_the_journal_then_from_each_verdict() -> None:
    data = ChartData(clock=lambda: 2_000.0)
    stats = {"verdicts_accepted": 2, "verdicts_rejected": 1, "credits_total": 200}
    assert data.needs_credits(stats)  # nothing read yet

    data.set_credits([(1_000.0, 100), (1_100.0, 100), (1_200.0, 200)], verdicts=3)
    assert not data.needs_credits(stats)
    data.add_event(_verdict(150, 1_300.0))

    assert list(data.credits)[-2:] == [(1_200.0, 200.0), (1_300.0, 350.0)]
    assert data.credits_total == 350
    assert not data.needs_credits({**stats, "verdicts_accepted": 3})  # the event counted it
    assert data.needs_credits({**stats, "verdicts_accepted": 4})  # one no event brought


def test_the_credits_plot_draws_the_total_up_to_now_on_a_clock_axis(qtbot: Any) -> None:
    data, clock = ChartData(clock=lambda: 1_700_000_600.0), Ticks()
    panel = _panel(qtbot, data, clock)
    (_, _), (lo, hi) = panel.credits_plot.viewRange()
    assert (lo, hi) == (0.0, 1.0)  # no verdict yet

    data.set_credits([(1_700_000_000.0, 100), (1_700_000_300.0, 350)], verdicts=2)
    clock.now += 10
    panel.redraw_if_dirty()

    xs, ys = panel._credits_curve.getData()
    assert list(xs) == [1_700_000_000.0, 1_700_000_000.0, 1_700_000_300.0, 1_700_000_600.0]
    assert list(ys) == [0.0, 100.0, 350.0, 350.0]  # from 0; the total holds until now
    (x_lo, x_hi), (_, y_hi) = panel.credits_plot.viewRange()
    assert x_lo <= 1_700_000_000.0 and x_hi >= 1_700_000_600.0 and y_hi >= 350
    assert panel.credits_plot.plotItem.titleLabel.text == "Credits earned: 350"
    assert panel.credits_plot.getAxis("bottom").__class__.__name__ == "DateAxisItem"


def _version(version_id: int, loss: float) -> ModelVersionPublished:
    return ModelVersionPublished(
        version_id=version_id,
        round_id=version_id + 10,
        parent_id=version_id - 1,
        eval_loss=loss,
        updates=2,
        block_number=100 + version_id,
        aggregator="0x" + "ef" * 20,
        current_version=version_id,
    )


def _journaled(version_id: int, loss: float) -> ModelVersion:
    return ModelVersion(
        version_id=version_id,
        round_id=version_id + 10,
        parent_id=version_id - 1,
        eval_loss=loss,
        updates=2,
        cid=f"bafk{version_id}",
        content_hash=f"{version_id:064x}",
        block_number=100 + version_id,
        aggregator="0x" + "ef" * 20,
        seen_at=1.0,
    )


def test_the_network_loss_comes_from_the_journal_then_from_each_version() -> None:
    data = ChartData(clock=lambda: 0.0, points=3)
    stats = {"model_version": 2, "model_eval_loss": 1.5}
    assert data.needs_network(stats)  # nothing read yet
    data.add_event(_version(9, 0.5))  # before the journal was read: kept, read again later
    assert data.needs_network(stats)

    data.set_network([_journaled(1, 2.0), _journaled(2, 1.5)], seen=data.network_in(stats))
    assert not data.needs_network(stats)
    assert data.network_series() == ([1.0, 2.0], [2.0, 1.5])
    drawn = data.versions["network"]
    data.add_event(_version(3, 1.25))
    data.add_event(_version(4, 1.125))  # one more than `points`: the oldest goes

    assert data.network_series() == ([2.0, 3.0, 4.0], [1.5, 1.25, 1.125])
    assert data.versions["network"] == drawn + 2
    assert not data.needs_network({"model_version": 4, "model_eval_loss": 1.125})
    # another network: the same number, another loss; or fewer versions than charted
    assert data.needs_network({"model_version": 4, "model_eval_loss": 3.0})
    assert data.needs_network({"model_version": 1, "model_eval_loss": 2.0})


def test_the_network_plot_draws_loss_per_whole_version(qtbot: Any) -> None:
    data, clock = ChartData(clock=lambda: 0.0), Ticks()
    panel = _panel(qtbot, data, clock)
    assert panel.network_plot.plotItem.titleLabel.text == "Network model"

    data.set_network(
        [_journaled(1, 5.09), _journaled(2, 1.88), _journaled(3, 1.49)], seen=(3, 1.49)
    )
    clock.now += 10
    panel.redraw_if_dirty()

    xs, ys = panel._network_curve.getData()
    assert (list(xs), list(ys)) == ([1.0, 2.0, 3.0], [5.09, 1.88, 1.49])
    (x_lo, x_hi), (y_lo, y_hi) = panel.network_plot.viewRange()
    assert x_lo < 1.0 and x_hi > 3.0 and y_lo <= 1.49 and y_hi >= 5.09
    assert panel.network_plot.plotItem.titleLabel.text == "Network model: v3, loss 1.4900"
    levels = panel.network_plot.getAxis("bottom").tickSpacing(x_lo, x_hi, 200)
    assert all(float(spacing).is_integer() for spacing, _ in levels)  # no version 2.5
    layout = panel.layout()
    assert isinstance(layout, QtWidgets.QGridLayout)
    loss_at = layout.getItemPosition(layout.indexOf(panel.loss_plot))
    network_at = layout.getItemPosition(layout.indexOf(panel.network_plot))
    assert network_at[:2] == (loss_at[0], loss_at[1] + 1)  # beside the training loss


def test_the_totals_name_the_network_model_version() -> None:
    data = ChartData(clock=lambda: 0.0)
    data.add_stats({"model_version": 0, "model_eval_loss": None, "updates_aggregated": 0})
    assert "Network model version</td><td align='right'><b>genesis" in summary_html(data)

    data.add_stats({"model_version": 4, "model_eval_loss": 1.2497, "updates_aggregated": 3})
    html = summary_html(data)
    assert "<b>4 (loss 1.250)</b>" in html and "Your updates aggregated" in html
