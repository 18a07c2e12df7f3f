"""The model-version watcher: reads the network model's versions from the chain, journals
each once, tells the bus, keeps its reads bounded, backs off while the chain is down, and
notices a chain that holds other versions (fakes, ManualClock)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from r3mes_desktop.core.errors import NetworkError, ValidationError
from r3mes_desktop.core.events import ModelVersionPublished
from r3mes_desktop.core.model_watch import ModelWatcher
from tests.helpers.coordinator_rig import Rig, make_rig
from tests.helpers.fakes import AGGREGATOR, make_spec

POLL_S = 10.0


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    rig = make_rig(tmp_path)
    await rig.coordinator.start(background=False)
    yield rig
    await rig.coordinator.close()


def watcher(rig: Rig, *, batch: int = 16, max_delay_s: float = 120.0) -> ModelWatcher:
    """A watcher over the rig's journal and fake chain, through its chain caller."""
    return ModelWatcher(
        journal=rig.coordinator.journal,
        chain=rig.chain,
        calls=rig.coordinator.callers["chain"],
        bus=rig.bus,
        clock=rig.clock,
        poll_s=POLL_S,
        max_delay_s=max_delay_s,
        batch=batch,
    )


def publish(rig: Rig, count: int, *, first_round: int = 1) -> None:
    for i in range(count):
        rig.chain.publish_version(first_round + i, eval_loss=5.0 - 0.1 * i)


def announced(rig: Rig) -> list[int]:
    return [e.version_id for e in rig.of_kind(ModelVersionPublished)]


async def test_new_versions_are_journaled_and_announced_once_each(rig: Rig) -> None:
    publish(rig, 2)
    watch = watcher(rig)

    report = await watch.poll()
    rig.chain.publish_version(7, eval_loss=4.5, updates=3)
    later = await watch.poll()
    idle = await watch.poll()

    assert [v.version_id for v in report.recorded] == [1, 2]
    assert [v.version_id for v in later.recorded] == [3] and later.read == 1
    assert idle.read == 0 and idle.recorded == []
    assert announced(rig) == [1, 2, 3]
    event = rig.of_kind(ModelVersionPublished)[-1]
    assert (event.round_id, event.parent_id, event.eval_loss, event.updates) == (7, 2, 4.5, 3)
    assert event.aggregator == AGGREGATOR
    series = await rig.coordinator.model_versions()
    assert [(v.version_id, v.round_id, v.eval_loss) for v in series] == [
        (1, 1, 5.0),
        (2, 2, 4.9),
        (3, 7, 4.5),
    ]
    assert series[2].content_hash == rig.chain.versions[3].content_hash.hex()
    stats = await rig.coordinator.statistics()
    assert (stats["model_version"], stats["model_eval_loss"]) == (3, 4.5)


async def test_before_any_version_the_statistics_say_genesis(rig: Rig) -> None:
    report = await watcher(rig).poll()

    assert (report.current, report.read) == (0, 0)
    assert rig.faults.count("version_info") == 0
    stats = await rig.coordinator.statistics()
    assert (stats["model_version"], stats["model_eval_loss"]) == (0, None)
    assert stats["updates_aggregated"] == 0


async def test_one_poll_reads_at_most_a_batch_newest_first(rig: Rig) -> None:
    publish(rig, 40)
    watch = watcher(rig, batch=16)

    reports = [await watch.poll() for _ in range(4)]

    assert [r.read for r in reports] == [16, 16, 8, 0]
    assert [r.more_due for r in reports] == [True, True, False, False]
    assert [v.version_id for v in reports[0].recorded] == list(range(25, 41))
    assert rig.faults.count("current_version") == 4  # one read of the current per poll
    assert rig.faults.count("version_info") == 40  # each version read once
    assert sorted(announced(rig)) == list(range(1, 41))
    # each event says the chain's current version: older ones were a backfill
    assert {e.current_version for e in rig.of_kind(ModelVersionPublished)} == {40}
    stats = await rig.coordinator.statistics()
    assert stats["model_version"] == 40  # right after the first poll already


async def test_a_backlog_is_read_by_polls_closer_together(rig: Rig) -> None:
    publish(rig, 5)
    watch = watcher(rig, batch=2)

    assert [await watch.poll_once() for _ in range(4)] == [1.0, 1.0, POLL_S, POLL_S]


async def test_a_chain_that_is_down_backs_off_and_is_logged_once(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    publish(rig, 2)
    down = NetworkError("connection refused", service="chain")
    rig.faults.fail("current_version", down, times=None)
    watch = watcher(rig)

    with caplog.at_level(logging.DEBUG, logger="r3mes_desktop.core.model_watch"):
        delays = [await watch.poll_once() for _ in range(5)]
    rig.faults.clear("current_version")
    recovered = await watch.poll_once()

    assert delays == [20.0, 40.0, 80.0, 120.0, 120.0]
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "reading model versions failed" in warnings[0].getMessage()
    assert recovered == POLL_S and announced(rig) == [1, 2]


async def test_a_chain_going_down_mid_poll_ends_it_and_keeps_what_was_read(rig: Rig) -> None:
    publish(rig, 3)
    watch = watcher(rig)
    real = rig.chain.version_info

    async def down_below_3(version_id: int) -> object:
        if version_id < 3:
            raise NetworkError("connection reset", service="chain")
        return await real(version_id)

    rig.chain.version_info = down_below_3  # type: ignore[method-assign]
    assert await watch.poll_once() == 20.0
    assert announced(rig) == [3]  # read before the chain went down: journaled, announced
    rig.chain.version_info = real  # type: ignore[method-assign]
    reads_before = rig.faults.count("version_info")
    await watch.poll_once()

    assert announced(rig) == [3, 1, 2]
    assert rig.faults.count("version_info") - reads_before == 2  # version 3 not read again


async def test_an_unreadable_version_does_not_stop_the_others(rig: Rig) -> None:
    publish(rig, 3)
    rig.faults.fail("version_info", ValidationError("could not decode"), times=1)
    watch = watcher(rig)

    first = await watch.poll()
    second = await watch.poll()

    assert [v.version_id for v in first.recorded] == [1, 2]  # version 3 failed, first read
    assert [v.version_id for v in second.recorded] == [3]


async def test_a_restarted_watcher_reads_only_what_is_new(rig: Rig) -> None:
    publish(rig, 3)
    await watcher(rig).poll()
    rig.chain.publish_version(9, eval_loss=4.0)
    reads_before = rig.faults.count("version_info")

    report = await watcher(rig).poll()  # what a restart builds, on the same journal

    assert [v.version_id for v in report.recorded] == [4]
    # the newest journaled one is read back once (is it this chain's?), then the new one
    assert rig.faults.count("version_info") - reads_before == 2
    assert announced(rig) == [1, 2, 3, 4]


async def test_versions_of_another_chain_are_dropped_and_read_again(rig: Rig) -> None:
    publish(rig, 3)
    await watcher(rig).poll()
    rig.chain.versions.clear()  # another network: other adapters, other rounds, and more
    for i in range(4):
        rig.chain.publish_version(50 + i, eval_loss=3.0 - i, content=b"other %d" % i)

    report = await watcher(rig).poll()

    assert report.forgotten == 3  # its version 3 is not ours: all dropped, all read again
    assert [(v.version_id, v.round_id) for v in report.recorded] == [
        (1, 50),
        (2, 51),
        (3, 52),
        (4, 53),
    ]
    series = await rig.coordinator.model_versions()
    assert [v.eval_loss for v in series] == [3.0, 2.0, 1.0, 0.0]


async def test_a_chain_behind_the_journal_drops_what_it_does_not_hold(rig: Rig) -> None:
    publish(rig, 3)
    watch = watcher(rig)
    await watch.poll()
    del rig.chain.versions[3], rig.chain.versions[2]  # the same chain, restored to version 1

    report = await watch.poll()

    assert report.forgotten == 3  # dropped, then version 1 read again
    assert [v.version_id for v in report.recorded] == [1]
    assert (await rig.coordinator.statistics())["model_version"] == 1


async def test_the_coordinator_runs_the_watcher_in_the_background(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, versions=True)
    publish(rig, 1)
    seen = asyncio.Event()
    rig.bus.subscribe(lambda e: seen.set() if isinstance(e, ModelVersionPublished) else None)

    await rig.coordinator.start()  # background loops on the ManualClock: no real waiting
    try:
        await asyncio.wait_for(seen.wait(), timeout=10)
    finally:
        await rig.coordinator.close()

    assert announced(rig) == [1]


async def test_a_coordinator_without_a_version_source_watches_nothing(rig: Rig) -> None:
    await rig.coordinator.run_transaction(make_spec(1))
    assert rig.coordinator.model_watch is None
    assert rig.faults.count("current_version") == 0
