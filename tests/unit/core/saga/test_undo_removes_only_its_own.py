"""An undo removes only what its own transaction added (IPFS pins are a set, not a count).

Two miners on one daemon, or two transactions of one miner, can make the same bytes and so
the same CID: a rollback must never unpin content that committed work still points at.
"""

from __future__ import annotations

import pytest

from r3mes_desktop.core.errors import AuthenticationError, NetworkError
from tests.helpers import fakes
from tests.helpers.coordinator_rig import Rig
from tests.helpers.fakes import make_spec

SAME_BYTES = b'{"lora": "identical update"}'


@pytest.fixture
def same_gradient_every_round(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fakes, "gradient_for", lambda spec: SAME_BYTES)


async def test_content_pinned_before_our_add_survives_our_rollback(
    rig: Rig, same_gradient_every_round: None
) -> None:
    other_miners_cid = await rig.store.add_and_pin(SAME_BYTES)  # another rig, same daemon
    rig.faults.fail("broadcast", AuthenticationError("insufficient funds"), times=None)

    status = await rig.coordinator.run_transaction(make_spec(39))

    assert status.state == "rolled_back"
    assert status.cid == other_miners_cid
    assert other_miners_cid in rig.store.pins  # not ours to remove
    assert rig.faults.count("unpin") == 0
    notes = [h["message"] for h in status.history if h["kind"] == "note"]
    assert f"{other_miners_cid} was pinned before this transaction: left pinned" in notes
    rec = await rig.coordinator.journal.get(status.transaction_id)
    assert rec is not None and rec.pinned_before is True


async def test_an_undo_keeps_a_pin_that_a_committed_transaction_needs(
    rig: Rig, same_gradient_every_round: None
) -> None:
    # Round 40 pins X, its submission is refused and its unpin cannot run yet (daemon down
    # for unpins): it waits in COMPENSATING with "unpin X" pending.
    rig.faults.fail("broadcast", AuthenticationError("insufficient funds"), times=1)
    rig.faults.fail("unpin", NetworkError("connection refused"), times=None)
    undone = await rig.coordinator.run_transaction(make_spec(40))
    assert undone.state == "compensating"
    x = undone.cid
    assert x in rig.store.pins

    # Round 41 makes the same bytes, so the same CID, and commits pointing at X.
    rig.faults.clear()
    committed = await rig.coordinator.run_transaction(make_spec(41))
    assert committed.state == "committed" and committed.cid == x

    # Round 40's undo runs now: X stays, because committed work needs it.
    rig.clock.advance(120)
    assert await rig.coordinator.retry_compensations() == 1
    after = await rig.coordinator.status(undone.transaction_id)
    assert after.state == "rolled_back"
    assert x in rig.store.pins
    assert rig.faults.count("unpin") == 4  # the failed tries only (1 + 3 retries)
    lines = [h["message"] for h in after.history if h["kind"] == "compensation"]
    assert lines == [f"kept pin {x}: transaction {committed.transaction_id} (committed) needs it"]
    assert await rig.coordinator.journal.integrity_check() == []
