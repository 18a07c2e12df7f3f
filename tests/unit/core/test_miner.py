"""The mining loop: picks unsubmitted open rounds, pipelines training with submission,
and moves through idle/mining/pausing/paused/stopping."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from r3mes_desktop.core.events import MinerStateChanged
from r3mes_desktop.core.miner import Miner, MinerState
from tests.helpers.clocks import settle
from tests.helpers.coordinator_rig import Rig, make_rig
from tests.helpers.fakes import make_spec


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    rig = make_rig(tmp_path, max_active_transactions=3)
    await rig.coordinator.start(background=False)
    yield rig
    await rig.coordinator.close()


async def until(predicate, rounds: int = 5000) -> None:  # type: ignore[no-untyped-def]
    """Poll a condition; journal writes finish on their own thread, so yield briefly."""
    for _ in range(rounds):
        if predicate():
            return
        await asyncio.sleep(0.002)
    raise AssertionError("condition never became true")


async def test_mines_every_open_round_once_then_finishes(rig: Rig) -> None:
    rig.chain.rounds = [make_spec(r) for r in (3, 1, 2)]
    miner = Miner(rig.coordinator, rig.chain, rig.bus, clock=rig.clock)

    await miner.start()
    await until(lambda: len(rig.chain.submissions) == 3)
    await miner.finish_then_stop()
    await until(lambda: miner.state is MinerState.IDLE)

    assert sorted(rig.chain.submissions) == [1, 2, 3]
    assert len(rig.chain.signed) == 3
    assert [e.new_state for e in rig.of_kind(MinerStateChanged)] == ["mining", "stopping", "idle"]
    trained = [d["round_id"] for op, d in rig.faults.calls if op == "train"]
    assert trained == [1, 2, 3]  # lowest round first, each once


async def test_training_of_the_next_round_overlaps_the_upload_of_the_previous(rig: Rig) -> None:
    rig.chain.rounds = [make_spec(1), make_spec(2)]
    second_training_started = asyncio.Event()
    train = rig.trainer.train
    add = rig.store.add_and_pin
    active_training = 0
    max_parallel_training = 0

    async def tracking_train(**kwargs):  # type: ignore[no-untyped-def]
        nonlocal active_training, max_parallel_training
        active_training += 1
        max_parallel_training = max(max_parallel_training, active_training)
        if kwargs["spec"].round_id == 2:
            second_training_started.set()
        try:
            return await train(**kwargs)
        finally:
            active_training -= 1

    async def upload_waiting_for_round_2(data: bytes) -> str:
        if not second_training_started.is_set():
            await asyncio.wait_for(second_training_started.wait(), timeout=5)
        return await add(data)

    rig.trainer.train = tracking_train  # type: ignore[method-assign]
    rig.store.add_and_pin = upload_waiting_for_round_2  # type: ignore[method-assign]
    miner = Miner(rig.coordinator, rig.chain, rig.bus, clock=rig.clock)

    await miner.start()
    await until(lambda: len(rig.chain.submissions) == 2)
    await miner.stop()

    assert max_parallel_training == 1  # one device lane
    assert sorted(rig.chain.submissions) == [1, 2]


async def test_pause_lets_running_rounds_finish_and_start_resumes(rig: Rig) -> None:
    rig.chain.rounds = [make_spec(1)]
    miner = Miner(rig.coordinator, rig.chain, rig.bus, clock=rig.clock)
    await miner.start()
    await until(lambda: miner.in_flight == [1])
    await miner.pause()
    assert miner.state in (MinerState.PAUSING, MinerState.PAUSED)
    await until(lambda: miner.state is MinerState.PAUSED)
    assert 1 in rig.chain.submissions

    rig.chain.rounds.append(make_spec(2))
    await miner.start()
    await until(lambda: 2 in rig.chain.submissions)
    await miner.stop()
    assert miner.state is MinerState.IDLE


async def test_stop_cancels_and_leaves_the_transaction_for_recovery(rig: Rig) -> None:
    rig.chain.rounds = [make_spec(1)]
    gate = asyncio.Event()
    add = rig.store.add_and_pin

    async def slow_add(data: bytes) -> str:
        await gate.wait()
        return await add(data)

    rig.store.add_and_pin = slow_add  # type: ignore[method-assign]
    miner = Miner(rig.coordinator, rig.chain, rig.bus, clock=rig.clock)
    await miner.start()
    await until(lambda: rig.faults.count("pow") == 1)
    await settle()
    await miner.stop()

    assert miner.state is MinerState.IDLE
    [status] = await rig.coordinator.list_transactions()
    assert status.state == "ipfs_upload"
    rig.store.add_and_pin = add  # type: ignore[method-assign]
    coordinator = await rig.reopen()
    report = await coordinator.start(background=False)
    await coordinator.wait_idle()
    assert report.count == 1
    assert (await coordinator.status(status.transaction_id)).state == "committed"


async def test_finish_then_stop_completes_every_running_round_and_starts_no_new_one(
    rig: Rig,
) -> None:
    """Round 1 uploads (held), round 2 trains (held), round 3 is open: finishing must
    commit 1 and 2 (the upload and the lane both complete) and never start 3."""
    rig.chain.rounds = [make_spec(r) for r in (1, 2, 3)]
    upload_gate, training_gate = asyncio.Event(), asyncio.Event()
    add, train = rig.store.add_and_pin, rig.trainer.train

    async def held_add(data: bytes) -> str:
        await upload_gate.wait()
        return await add(data)

    async def held_train(**kwargs):  # type: ignore[no-untyped-def]
        if kwargs["spec"].round_id == 2:
            await training_gate.wait()
        return await train(**kwargs)

    rig.store.add_and_pin = held_add  # type: ignore[method-assign]
    rig.trainer.train = held_train  # type: ignore[method-assign]
    miner = Miner(rig.coordinator, rig.chain, rig.bus, clock=rig.clock)
    await miner.start()
    await until(lambda: miner.in_flight == [1, 2])

    await miner.finish_then_stop()
    assert miner.state is MinerState.STOPPING
    upload_gate.set()
    training_gate.set()
    await until(lambda: miner.state is MinerState.IDLE)

    assert sorted(rig.chain.submissions) == [1, 2]
    assert [d["round_id"] for op, d in rig.faults.calls if op == "train"] == [1, 2]
    states = {s.round_id: s.state for s in await rig.coordinator.list_transactions()}
    assert states == {1: "committed", 2: "committed"}


async def test_the_next_rounds_are_listed_while_the_current_round_trains(rig: Rig) -> None:
    """Listing open rounds is a chain call (retries, breaker waits under failures): it runs
    while the current round holds the device lane (its journal writes and training), not
    only after the lane is free."""
    rig.chain.rounds = [make_spec(1), make_spec(2)]
    second_listing = asyncio.Event()
    train, list_rounds = rig.trainer.train, rig.chain.open_rounds
    listings = 0

    async def held_train(**kwargs):  # type: ignore[no-untyped-def]
        if kwargs["spec"].round_id == 1:  # the lane stays busy until the next listing
            await asyncio.wait_for(second_listing.wait(), timeout=5)
        return await train(**kwargs)

    async def listing():  # type: ignore[no-untyped-def]
        nonlocal listings
        listings += 1
        if listings == 2:
            second_listing.set()
        return await list_rounds()

    rig.trainer.train = held_train  # type: ignore[method-assign]
    rig.chain.open_rounds = listing  # type: ignore[method-assign]
    miner = Miner(rig.coordinator, rig.chain, rig.bus, clock=rig.clock)
    await miner.start()
    await until(lambda: len(rig.chain.submissions) == 2)
    await miner.finish_then_stop()
    await until(lambda: miner.state is MinerState.IDLE)

    # without the listing during round 1's lane, its training would wait out the timeout
    assert sorted(rig.chain.submissions) == [1, 2]
    assert [d["round_id"] for op, d in rig.faults.calls if op == "train"] == [1, 2]


async def test_wake_starts_a_newly_opened_round_without_waiting_for_the_poll(rig: Rig) -> None:
    """The devnet operator wakes the miner when it opens rounds: with a poll interval the
    test never reaches, the new round is still mined."""
    rig.chain.rounds = [make_spec(1)]
    miner = Miner(rig.coordinator, rig.chain, rig.bus, poll_interval_s=3600)  # a real clock
    await miner.start()
    await until(lambda: len(rig.chain.submissions) == 1 and not miner.in_flight)
    for _ in range(50):  # the miner lists again (nothing new) and waits for its poll
        await settle()
    listed = rig.faults.count("open_rounds")
    rig.chain.rounds = [make_spec(1), make_spec(2)]
    for _ in range(50):
        await settle()
    assert len(rig.chain.submissions) == 1  # not seen: the next poll is an hour away
    assert rig.faults.count("open_rounds") == listed
    miner.wake()
    await until(lambda: len(rig.chain.submissions) == 2)
    await miner.stop()


async def test_a_round_closed_while_training_stops_at_the_next_step(rig: Rig) -> None:
    """The operator closes the round mid-training: the miner sees it within a poll interval
    of training progress and stops, instead of training to the end and learning it when
    the submission is refused."""
    rig.chain.rounds = [make_spec(1)]
    steps_trained = 0
    cancelled = asyncio.Event()

    async def long_train(*, transaction_id, spec, progress):  # type: ignore[no-untyped-def]
        nonlocal steps_trained
        try:
            for step in range(1, 10_000):
                steps_trained = step
                progress(step / 10_000, {"step": step})
                rig.clock.advance(1.0)  # one step a second
                await asyncio.sleep(0.001)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        raise AssertionError("trained to the end of a closed round")

    rig.trainer.train = long_train  # type: ignore[method-assign]
    miner = Miner(rig.coordinator, rig.chain, rig.bus, clock=rig.clock, poll_interval_s=5)
    await miner.start()
    await until(lambda: steps_trained >= 3)
    rig.chain.rounds = []  # closed on chain
    closed_at = steps_trained
    await asyncio.wait_for(cancelled.wait(), 10)
    assert steps_trained <= closed_at + 6  # within a poll interval (5 steps) and one step
    await until(lambda: not miner.in_flight)
    for _ in range(500):  # the stop is recorded right after the training is cancelled
        [tx] = await rig.coordinator.journal.list_transactions(limit=10)
        if tx.state.value == "failed" and tx.id in rig.trainer.discarded:
            break
        await asyncio.sleep(0.01)
    assert tx.state.value == "failed" and tx.failed_step == "training"
    assert tx.error_message == "round 1 was closed on chain before its training finished"
    assert await rig.coordinator.dead_letters() == []  # a retry cannot reopen a round
    assert rig.chain.submissions == {}
    assert tx.id in rig.trainer.discarded
    await miner.stop()


async def test_a_rig_with_two_device_lanes_trains_two_rounds_at_once(tmp_path: Path) -> None:
    """One round per device: with two lanes two rounds train together, never three; a
    lane taken away (a device switched off) is felt by the next round."""
    rig = make_rig(tmp_path, max_active_transactions=5, lanes=2)
    await rig.coordinator.start(background=False)
    rig.chain.rounds = [make_spec(r) for r in (1, 2, 3, 4)]
    release = asyncio.Event()
    train = rig.trainer.train
    active: set[int] = set()
    most = 0

    async def gated_train(**kwargs):  # type: ignore[no-untyped-def]
        nonlocal most
        round_id = kwargs["spec"].round_id
        active.add(round_id)
        most = max(most, len(active))
        try:
            await release.wait()
            return await train(**kwargs)
        finally:
            active.discard(round_id)

    rig.trainer.train = gated_train  # type: ignore[method-assign]
    lanes = 2
    miner = Miner(rig.coordinator, rig.chain, rig.bus, clock=rig.clock, lanes=lambda: lanes)
    try:
        await miner.start()
        await until(lambda: active == {1, 2})
        await settle()
        assert active == {1, 2} and miner.in_flight == [1, 2]  # round 3 waits for a lane
        lanes = 1
        release.set()
        await until(lambda: len(rig.chain.submissions) == 4)
        assert most == 2
    finally:
        await miner.stop()
        await rig.coordinator.close()
