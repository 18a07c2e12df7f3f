"""The miner says where it is (connected, waiting for rounds) only when that changes, and
skips, once per round with its reason, a round it cannot finish before the deadline at
the speed it measured (injected clock: the fake trainer takes a known time)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from r3mes_desktop.core.deadlines import clock_time
from r3mes_desktop.core.events import Notice
from r3mes_desktop.core.miner import Miner, MinerState
from tests.helpers.clocks import settle
from tests.helpers.coordinator_rig import Rig, make_rig
from tests.helpers.fakes import make_spec

NETWORK = "it (chain 1337), contract 0xabab…abab"


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    rig = make_rig(tmp_path, max_active_transactions=3)
    await rig.coordinator.start(background=False)
    yield rig
    await rig.coordinator.close()


async def until(predicate, rounds: int = 5000) -> None:  # type: ignore[no-untyped-def]
    for _ in range(rounds):
        if predicate():
            return
        await asyncio.sleep(0.002)
    raise AssertionError("condition never became true")


def said(rig: Rig, source: str) -> list[str]:
    return [n.message for n in rig.of_kind(Notice) if n.source == source]


async def test_connected_then_waiting_then_rounds_again_each_said_once(rig: Rig) -> None:
    rig.chain.rounds = [make_spec(1)]
    miner = Miner(rig.coordinator, rig.chain, rig.bus, clock=rig.clock, network=NETWORK)
    await miner.start()
    await until(lambda: 1 in rig.chain.submissions and not miner.in_flight)
    listed = rig.faults.count("open_rounds")
    await until(lambda: rig.faults.count("open_rounds") >= listed + 5)  # polls, nothing new
    assert said(rig, "network") == [
        f"connected to {NETWORK}, 1 open round for you",
        f"waiting for rounds: none open for you on {NETWORK}",
    ]
    rig.chain.rounds += [make_spec(2), make_spec(3)]
    miner.wake()
    await until(lambda: len(rig.chain.submissions) == 3 and not miner.in_flight)
    await miner.stop()
    assert said(rig, "network")[2] == f"2 open rounds for you on {NETWORK}"
    assert said(rig, "network")[3:] == [f"waiting for rounds: none open for you on {NETWORK}"]
    assert all(n.level == "info" for n in rig.of_kind(Notice) if n.source == "network")


async def test_no_rounds_at_start_says_connected_and_waiting_and_a_restart_says_it_again(
    rig: Rig,
) -> None:
    miner = Miner(rig.coordinator, rig.chain, rig.bus, clock=rig.clock, network=NETWORK)
    await miner.start()
    await until(lambda: rig.faults.count("open_rounds") >= 3)
    await miner.stop()
    listed = rig.faults.count("open_rounds")
    await miner.start()
    await until(lambda: rig.faults.count("open_rounds") >= listed + 3)
    await miner.stop()
    line = f"connected to {NETWORK}, no open rounds for you: waiting for rounds"
    assert said(rig, "network") == [line, line]


async def test_a_round_it_cannot_finish_in_time_is_skipped_once_with_its_reason(
    rig: Rig,
) -> None:
    """Round 1 (no deadline) measures the speed: 2 steps in 10 s, 0.2 steps/s. Round 2's
    400 steps would take 2000 s but its deadline is in 600 s: skipped, said once over many
    polls. Round 3 fits and is mined."""
    rig.trainer.duration_s = 10.0
    rig.chain.rounds = [make_spec(1)]
    miner = Miner(rig.coordinator, rig.chain, rig.bus, clock=rig.clock, poll_interval_s=1.0)
    await miner.start()
    await until(lambda: 1 in rig.chain.submissions and not miner.in_flight)
    assert miner.step_rate.per_second == pytest.approx(0.2)

    now = rig.clock.time()
    late = replace(make_spec(2, steps=400), deadline=int(now + 600))
    fits = replace(make_spec(3, steps=4), deadline=int(now + 3600))
    rig.chain.rounds += [late, fits]
    miner.wake()
    await until(lambda: 3 in rig.chain.submissions and not miner.in_flight)
    polls = rig.faults.count("open_rounds")
    await until(lambda: rig.faults.count("open_rounds") >= polls + 10)
    await miner.stop()

    assert 2 not in rig.chain.submissions
    trained = [d["round_id"] for op, d in rig.faults.calls if op == "train"]
    assert trained == [1, 3]
    skips = [n for n in rig.of_kind(Notice) if n.source == "miner"]
    assert len(skips) == 1
    assert skips[0].level == "warning"
    finish = clock_time(now + 400 / 0.2)
    assert skips[0].message.startswith(
        f"round 2: predicted finish {finish} after its deadline {clock_time(now + 600)}"
    )


async def test_before_any_measurement_a_round_with_a_deadline_is_attempted(rig: Rig) -> None:
    """No speed known yet: attempt (a guess would skip rounds a fast rig could finish)."""
    now = rig.clock.time()
    rig.chain.rounds = [replace(make_spec(1, steps=10**6), deadline=int(now + 60))]
    miner = Miner(rig.coordinator, rig.chain, rig.bus, clock=rig.clock)
    await miner.start()
    await until(lambda: 1 in rig.chain.submissions and not miner.in_flight)
    await miner.stop()
    assert said(rig, "miner") == []


async def test_a_round_whose_deadline_passed_is_never_started(rig: Rig) -> None:
    now = rig.clock.time()
    rig.chain.rounds = [replace(make_spec(1), deadline=int(now - 5))]
    miner = Miner(rig.coordinator, rig.chain, rig.bus, clock=rig.clock)
    await miner.start()
    await until(lambda: rig.faults.count("open_rounds") >= 5)
    await miner.stop()
    for _ in range(5):
        await settle()
    assert miner.state is MinerState.IDLE
    assert rig.faults.count("train") == 0
    assert said(rig, "miner") == [
        f"round 1: its deadline {clock_time(now - 5)} has passed: skipped"
    ]
