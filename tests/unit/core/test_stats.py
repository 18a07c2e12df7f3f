"""Throughput in the statistics: commits per minute of the time the journal actually covers."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.coordinator_rig import make_rig
from tests.helpers.fakes import make_spec


async def test_young_miner_reports_its_real_rate_not_the_hours_average(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    await rig.coordinator.start(background=False)
    rig.trainer.duration_s = 0.5
    for round_id in range(1, 41):  # 40 commits, 0.5 s of (fake) training each: 20 s
        status = await rig.coordinator.run_transaction(make_spec(round_id))
        assert status.state == "committed"

    stats = await rig.coordinator.statistics(window_s=3600)

    assert stats["committed_transactions"] == 40
    assert stats["transactions_per_minute"] == pytest.approx(120.0)  # not 40 / 60 min = 0.67
    assert stats["throughput_covered_s"] == pytest.approx(20.0)
    await rig.coordinator.close()


async def test_a_miner_older_than_the_window_divides_by_the_whole_window(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    await rig.coordinator.start(background=False)
    await rig.coordinator.run_transaction(make_spec(1))
    rig.clock.advance(7200)  # outside a 1 h window; the journal covers the whole window
    for round_id in (2, 3, 4):
        await rig.coordinator.run_transaction(make_spec(round_id))
    rig.clock.advance(30)

    stats = await rig.coordinator.statistics(window_s=3600)

    assert stats["throughput_covered_s"] == 3600
    assert stats["transactions_per_minute"] == pytest.approx(3 * 60 / 3600)
    await rig.coordinator.close()


async def test_commits_in_the_journals_first_instant_use_the_floor(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    await rig.coordinator.start(background=False)
    await rig.coordinator.run_transaction(make_spec(1))  # instant fakes: no time passes

    stats = await rig.coordinator.statistics(window_s=3600)

    assert stats["throughput_covered_s"] == 1.0
    assert stats["transactions_per_minute"] == pytest.approx(60.0)
    await rig.coordinator.close()


async def test_an_empty_journal_reports_no_throughput(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    await rig.coordinator.start(background=False)

    stats = await rig.coordinator.statistics(window_s=600)

    assert stats["transactions_per_minute"] == 0.0
    assert stats["throughput_covered_s"] == 600
    await rig.coordinator.close()
