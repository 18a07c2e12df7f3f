"""A dead letter whose round another transaction has committed closes itself.

Its retry could only fail (the round is taken), so left open it waited forever.
"""

from __future__ import annotations

from pathlib import Path

from r3mes_desktop.core.errors import NetworkError
from tests.helpers.coordinator_rig import Rig, make_rig
from tests.helpers.fakes import make_spec


async def _letter_then_commit(rig: Rig, round_id: int) -> tuple[str, str]:
    rig.faults.fail("add_and_pin", NetworkError("502 bad gateway"), times=None)
    failed = await rig.coordinator.run_transaction(make_spec(round_id))
    assert failed.state in ("rolled_back", "compensating")
    assert [d.status for d in await rig.coordinator.dead_letters()] == ["open"]
    rig.faults.clear()
    await rig.coordinator.retry_compensations()
    committed = await rig.coordinator.run_transaction(make_spec(round_id))
    assert committed.state == "committed"
    return failed.transaction_id, committed.transaction_id


async def test_committing_a_round_closes_its_open_dead_letters(rig: Rig) -> None:
    loser, winner = await _letter_then_commit(rig, 60)

    assert await rig.coordinator.dead_letters() == []  # none open
    [letter] = await rig.coordinator.journal.dead_letters(status=None)
    assert letter.status == "superseded" and letter.resolved_at is not None
    status = await rig.coordinator.status(loser)
    notes = [h["message"] for h in status.history if h["kind"] == "note"]
    assert f"dead letter closed as superseded: round 60 was committed by transaction {winner}" in (
        notes
    )
    rec = await rig.coordinator.journal.get(loser)
    assert rec is not None
    await rig.coordinator.journal.settle()
    assert not await rig.coordinator.journal.has_gradient(rec)  # nobody will retry it
    assert await rig.coordinator.journal.integrity_check() == []


async def test_start_closes_letters_left_open_by_an_older_journal(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    await rig.coordinator.start(background=False)
    await _letter_then_commit(rig, 61)

    def reopen_letter(conn):  # as a journal written before letters closed themselves
        conn.execute("UPDATE dead_letters SET status = 'open', resolved_at = NULL")

    await rig.coordinator.journal.run(reopen_letter)
    coordinator = await rig.reopen()
    report = await coordinator.start(background=False)
    assert report.letters_superseded == 1
    assert await coordinator.dead_letters() == []
    assert [d.status for d in await coordinator.journal.dead_letters(status=None)] == ["superseded"]
    await coordinator.close()
