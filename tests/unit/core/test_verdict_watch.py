"""The verdict watcher: reads verdicts of committed submissions, journals them, tells the
bus, flags the overdue ones once, and keeps its chain reads bounded (fakes, ManualClock)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from r3mes_desktop.core.errors import NetworkError, ValidationError
from r3mes_desktop.core.events import Notice, VerdictRecorded
from r3mes_desktop.core.verdict_watch import NOTICE_EACH, VerdictWatcher
from r3mes_desktop.core.workproof import Reason
from tests.helpers.coordinator_rig import Rig, make_rig
from tests.helpers.fakes import VALIDATOR, make_spec

POLL_S = 5.0


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    rig = make_rig(tmp_path, verdict_overdue_blocks=50)
    await rig.coordinator.start(background=False)
    yield rig
    await rig.coordinator.close()


def watcher(rig: Rig, **kw: float) -> VerdictWatcher:
    """A watcher over the rig's journal and fake chain, through its chain caller."""
    options: dict[str, float] = {"poll_s": POLL_S, "max_delay_s": 60.0, **kw}
    return VerdictWatcher(
        journal=rig.coordinator.journal,
        chain=rig.chain,
        calls=rig.coordinator.callers["chain"],
        bus=rig.bus,
        clock=rig.clock,
        overdue_blocks=lambda: rig.coordinator.settings.verdict_overdue_blocks,
        poll_s=options["poll_s"],
        max_delay_s=options["max_delay_s"],
        overdue_delay_s=options.get("overdue_delay_s", 600.0),
        batch=int(options.get("batch", 16)),
    )


async def commit(rig: Rig, *rounds: int) -> list[str]:
    ids = []
    for round_id in rounds:
        status = await rig.coordinator.run_transaction(make_spec(round_id))
        assert status.state == "committed"
        ids.append(status.transaction_id)
    return ids


def reads(rig: Rig) -> tuple[int, int]:
    return rig.faults.count("latest_block"), rig.faults.count("submission_info")


async def test_an_accepted_verdict_is_journaled_with_the_rounds_reward(rig: Rig) -> None:
    (tx,) = await commit(rig, 1)
    rig.chain.rewards[1] = 250
    watch = watcher(rig)

    empty = await watch.poll()
    rig.chain.post_verdict(1, accepted=True)
    rig.clock.advance(POLL_S)
    report = await watch.poll()

    assert empty.checked == 1 and empty.recorded == []
    assert [r.id for r in report.recorded] == [tx]
    rec = await rig.coordinator.journal.get(tx)
    assert rec is not None
    assert (rec.verdict, rec.credits, rec.verdict_reason) == ("accepted", 250, 0)
    assert rec.verdict_validator == VALIDATOR and rec.verdict_block == rig.chain.block
    (event,) = rig.of_kind(VerdictRecorded)
    assert (event.transaction_id, event.verdict, event.credits) == (tx, "accepted", 250)
    assert not rig.of_kind(Notice)
    status = await rig.coordinator.status(tx)
    assert (status.verdict, status.credits, status.verdict_reason_text) == (
        "accepted",
        250,
        "accepted",
    )
    assert any(h["kind"] == "verdict" for h in status.history)
    stats = await rig.coordinator.statistics()
    assert (stats["verdicts_accepted"], stats["verdicts_pending"], stats["credits_total"]) == (
        1,
        0,
        250,
    )


async def test_a_rejection_earns_nothing_and_is_announced_with_its_reason(rig: Rig) -> None:
    (tx,) = await commit(rig, 1)
    rig.chain.post_verdict(1, accepted=False, reason=int(Reason.SEGMENT_MISMATCH))

    await watcher(rig).poll()

    rec = await rig.coordinator.journal.get(tx)
    assert rec is not None and (rec.verdict, rec.credits) == ("rejected", 0)
    assert rig.faults.count("round_info") == 0  # a rejection needs no reward
    (event,) = rig.of_kind(VerdictRecorded)
    assert event.reason_text == "a sampled training segment did not reproduce"
    (notice,) = rig.of_kind(Notice)
    assert notice.level == "warning" and notice.transaction_id == tx
    assert "rejected (a sampled training segment did not reproduce)" in notice.message


async def test_once_recorded_a_transaction_costs_no_chain_read(rig: Rig) -> None:
    await commit(rig, 1)
    rig.chain.post_verdict(1, accepted=True)
    watch = watcher(rig)
    await watch.poll()
    before = reads(rig)

    for _ in range(3):
        rig.clock.advance(600)
        assert (await watch.poll()).checked == 0

    assert reads(rig) == before  # nothing waits: not even the head is read


async def test_a_waiting_transaction_backs_off_to_the_ceiling(rig: Rig) -> None:
    await commit(rig, 1)
    watch = watcher(rig)
    checked_at = []
    for second in range(0, 200):
        if (await watch.poll()).checked:
            checked_at.append(second)
        rig.clock.advance(1)

    gaps = [b - a for a, b in itertools.pairwise(checked_at)]
    assert gaps[:5] == [5, 10, 20, 40, 60]
    assert set(gaps[4:]) == {60}


async def test_one_poll_reads_at_most_a_batch(rig: Rig) -> None:
    await commit(rig, *range(1, 41))
    watch = watcher(rig, batch=16)

    counts, backlog = [], []
    for _ in range(4):
        before = rig.faults.count("submission_info")
        backlog.append((await watch.poll()).more_due)
        counts.append(rig.faults.count("submission_info") - before)

    assert counts == [16, 16, 8, 0]  # then everyone is backing off
    assert backlog == [True, True, False, False]
    assert rig.faults.count("latest_block") == 4  # one head read per poll


async def test_a_backlog_is_read_by_polls_closer_together(rig: Rig) -> None:
    await commit(rig, *range(1, 4))
    watch = watcher(rig, batch=2)

    assert [await watch.poll_once() for _ in range(3)] == [1.0, POLL_S, POLL_S]


async def test_the_longest_waiting_is_read_first_and_unread_ones_are_never_overdue(
    rig: Rig,
) -> None:
    """Seen on the devnet: with a backlog, the newest submissions were read first (their
    verdicts not posted yet) and older ones, verdict already on chain but not read, were
    flagged overdue all the same."""
    (first,) = await commit(rig, 1)
    rig.clock.advance(10)
    (second,) = await commit(rig, 2)
    rig.chain.post_verdict(1, accepted=True)
    rig.chain.post_verdict(2, accepted=True)
    rig.chain.block += 60
    watch = watcher(rig, batch=1)

    report = await watch.poll()

    assert [r.id for r in report.recorded] == [first]  # the oldest, whose verdict is there
    assert report.overdue == [] and not rig.of_kind(Notice)
    later = await watch.poll()
    assert [r.id for r in later.recorded] == [second]
    assert not rig.of_kind(Notice)


async def test_overdue_is_flagged_and_announced_once_even_after_a_restart(rig: Rig) -> None:
    (tx,) = await commit(rig, 1)
    watch = watcher(rig)
    rig.chain.block += 49
    await watch.poll()
    assert not rig.of_kind(Notice)  # 49 blocks: not yet

    rig.chain.block += 1
    rig.clock.advance(POLL_S)
    report = await watch.poll()
    rig.clock.advance(600)
    await watch.poll()
    await watcher(rig).poll()  # a new watcher: what a restart builds

    assert [r.id for r in report.overdue] == [tx]
    (notice,) = rig.of_kind(Notice)
    assert notice.transaction_id == tx and notice.level == "warning"
    assert notice.message == "Round 1: submitted, no verdict after 50 blocks"
    status = await rig.coordinator.status(tx)
    assert status.verdict == "overdue"
    assert (await rig.coordinator.statistics())["verdicts_overdue"] == 1

    rig.chain.post_verdict(1, accepted=True)  # a late verdict still counts
    rig.clock.advance(600)
    await watch.poll()
    assert (await rig.coordinator.status(tx)).verdict == "accepted"


async def test_the_overdue_threshold_is_read_live_from_settings(rig: Rig) -> None:
    await commit(rig, 1)
    rig.chain.block += 10
    watch = watcher(rig)
    await watch.poll()
    assert not rig.of_kind(Notice)

    rig.coordinator.settings = rig.coordinator.settings.model_copy(
        update={"verdict_overdue_blocks": 10}
    )
    rig.clock.advance(POLL_S)
    await watch.poll()

    assert len(rig.of_kind(Notice)) == 1


async def test_many_overdue_at_once_make_one_notice(rig: Rig) -> None:
    await commit(rig, *range(1, NOTICE_EACH + 3))
    rig.chain.block += 100

    report = await watcher(rig).poll()

    assert len(report.overdue) == NOTICE_EACH + 2
    (notice,) = rig.of_kind(Notice)
    assert notice.transaction_id is None
    assert notice.message == f"{NOTICE_EACH + 2} transactions submitted, no verdict after 50 blocks"


async def test_a_chain_that_is_down_ends_the_poll_and_spaces_the_next(rig: Rig) -> None:
    await commit(rig, 1, 2)
    rig.chain.post_verdict(1, accepted=True)
    rig.faults.fail("latest_block", NetworkError("connection refused", service="chain"), times=None)
    watch = watcher(rig)

    delays = [await watch.poll_once() for _ in range(4)]
    rig.faults.clear("latest_block")
    recovered = await watch.poll_once()

    assert delays == [10.0, 20.0, 40.0, 60.0]
    assert rig.faults.count("submission_info") == 2  # both, once, after the recovery
    assert recovered == POLL_S
    assert len(rig.of_kind(VerdictRecorded)) == 1


async def test_an_unreadable_submission_does_not_stop_the_others(rig: Rig) -> None:
    await commit(rig, 1, 2)
    rig.chain.post_verdict(1, accepted=True)
    rig.chain.post_verdict(2, accepted=True)
    rig.faults.fail("submission_info", ValidationError("could not decode"), times=1)

    report = await watcher(rig).poll()

    assert report.checked == 1 and len(report.recorded) == 1


async def test_the_coordinator_runs_the_watcher_in_the_background(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, verdicts=True)
    await rig.coordinator.start(background=False)
    (tx,) = await commit(rig, 1)
    rig.chain.post_verdict(1, accepted=True)
    seen = asyncio.Event()
    rig.bus.subscribe(lambda e: seen.set() if isinstance(e, VerdictRecorded) else None)
    coordinator = await rig.reopen()

    await coordinator.start()  # background loops on the ManualClock: no real waiting
    try:
        await asyncio.wait_for(seen.wait(), timeout=10)
    finally:
        await coordinator.close()

    assert [e.transaction_id for e in rig.of_kind(VerdictRecorded)] == [tx]


async def test_a_coordinator_without_a_verdict_source_watches_nothing(rig: Rig) -> None:
    await commit(rig, 1)
    assert rig.coordinator.verdict_watch is None
    assert reads(rig) == (0, 0)
