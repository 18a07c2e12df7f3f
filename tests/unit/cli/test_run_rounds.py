"""`run --rounds N` stops after N committed transactions: rolled-back ones do not count, and
the pipelined miner does not start rounds that could only overshoot N.

The budget is driven by the real Miner and Coordinator over in-process fakes (a failure
injected into the upload), so the test takes well under a second."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from r3mes_desktop.cli import build_parser
from r3mes_desktop.cli.commands_run import RoundBudget
from r3mes_desktop.core.errors import PermanentError
from r3mes_desktop.core.events import TransactionStateChanged
from r3mes_desktop.core.miner import Miner, MinerState
from tests.helpers.coordinator_rig import Rig, make_rig
from tests.helpers.fakes import make_spec

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    rig = make_rig(tmp_path, max_active_transactions=3)
    await rig.coordinator.start(background=False)
    yield rig
    await rig.coordinator.close()


async def _mine(rig: Rig, rounds: int) -> tuple[RoundBudget, Miner]:
    """What cmd_run does: subscribe the budget, start, wait for it, finish, stop."""
    miner = Miner(rig.coordinator, rig.chain, rig.bus, clock=rig.clock)
    budget = RoundBudget(rounds, miner)
    unsubscribe = rig.bus.subscribe(budget.on_event)
    try:
        await miner.start()
        await asyncio.wait_for(budget.reached.wait(), timeout=20)
        await miner.finish_then_stop()
        for _ in range(2000):
            if miner.state is MinerState.IDLE:
                break
            await asyncio.sleep(0.005)
        await miner.stop()
    finally:
        unsubscribe()
    return budget, miner


def _states(rig: Rig) -> list[str]:
    return [
        e.new_state
        for e in rig.of_kind(TransactionStateChanged)
        if e.new_state in ("committed", "failed", "rolled_back")
    ]


async def test_rounds_counts_commits_not_rollbacks(rig: Rig) -> None:
    rig.chain.rounds = [make_spec(r) for r in range(1, 8)]
    rig.faults.fail("add_and_pin", PermanentError("IPFS refused the upload"), times=1)
    budget, _ = await _mine(rig, 2)
    assert budget.committed == 2
    assert _states(rig).count("committed") == 2  # not 3: no round left running overshot
    assert len(rig.chain.submissions) == 2
    assert len(budget.finished) == 3 and budget.finished[0].new_state != "committed"


async def test_no_round_starts_that_could_only_overshoot(rig: Rig) -> None:
    rig.chain.rounds = [make_spec(r) for r in range(1, 8)]
    budget, _ = await _mine(rig, 2)
    trained = [d["round_id"] for op, d in rig.faults.calls if op == "train"]
    assert trained == [1, 2]
    assert budget.committed == 2 and _states(rig) == ["committed", "committed"]


def test_budget_pauses_and_restarts_the_miner() -> None:
    """The counting rule on its own: pause when committed + running can reach N, start
    again when a running one fails; reached only by commits."""

    class Recorder:
        def __init__(self) -> None:
            self.state = "mining"
            self.calls: list[str] = []

        async def pause(self) -> None:
            self.calls.append("pause")
            self.state = "pausing"

        async def start(self) -> None:
            self.calls.append("start")
            self.state = "mining"

    def event(tx: str, old: str | None, new: str) -> TransactionStateChanged:
        return TransactionStateChanged(transaction_id=tx, round_id=1, old_state=old, new_state=new)

    async def scenario() -> tuple[RoundBudget, Recorder]:
        miner = Recorder()
        budget = RoundBudget(2, miner)
        budget.on_event(event("a", None, "pending"))
        await asyncio.sleep(0)
        assert miner.calls == []  # one running, two wanted: keep mining
        budget.on_event(event("b", None, "pending"))
        await asyncio.sleep(0)
        assert miner.calls == ["pause"]
        budget.on_event(event("a", "compensating", "rolled_back"))
        await asyncio.sleep(0)
        assert miner.calls == ["pause", "start"] and not budget.reached.is_set()
        budget.on_event(event("b", "task_complete", "committed"))
        budget.on_event(event("c", None, "pending"))
        await asyncio.sleep(0)
        assert miner.calls == ["pause", "start", "pause"]
        budget.on_event(event("c", "task_complete", "committed"))
        return budget, miner

    budget, _ = asyncio.run(scenario())
    assert budget.reached.is_set() and budget.committed == 2 and len(budget.finished) == 3


def test_help_says_rounds_counts_commits() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    text = sub.choices["run"].format_help()  # type: ignore[attr-defined]
    assert "stop after N committed transactions" in " ".join(text.split())
