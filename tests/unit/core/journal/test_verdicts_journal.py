"""Verdicts in the journal: the schema-5 migration, the once-only writes, credits, integrity."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from r3mes_desktop.core.journal import Change, Journal, connect, migrate
from r3mes_desktop.core.journal.schema import SCHEMA_VERSION
from r3mes_desktop.core.records import TransactionStatus, spec_to_json
from r3mes_desktop.core.stats import compute_statistics
from r3mes_desktop.core.txstate import TxState
from tests.helpers.fakes import MINER, VALIDATOR, make_spec


async def _committed(journal: Journal, tx_id: str, round_id: int, *, at: float = 10.0) -> None:
    """A committed transaction as the saga leaves it (CID, signed submission, receipt)."""
    await journal.create(tx_id=tx_id, spec=make_spec(round_id), miner=MINER, now=at, deadline=None)
    await journal.apply(
        Change(
            tx_id,
            at + 1,
            fields={"tx_hash": f"0x{round_id:02x}", "signed_raw": b"raw", "cid": "bafk"},
            claim_submission=True,
        )
    )
    await journal.apply(
        Change(tx_id, at + 2, state=TxState.COMMITTED, fields={"receipt_block": 100 + round_id})
    )


def test_a_schema_4_journal_is_upgraded_and_keeps_its_committed_rows(tmp_path: Path) -> None:
    path = tmp_path / "v4.db"
    conn = connect(path)
    migrate(conn, target=4)
    conn.execute(
        "INSERT INTO transactions (id, round_id, miner, state, spec, created_at, updated_at, "
        "finished_at, cid, tx_hash, signed_raw, receipt_block) "
        "VALUES ('old', 3, ?, 'committed', ?, 1, 2, 2, 'bafk', '0x3', x'00', 103)",
        (MINER, spec_to_json(make_spec(3))),
    )
    conn.close()

    conn = connect(path)
    assert migrate(conn) == SCHEMA_VERSION
    row = conn.execute(
        "SELECT id, receipt_block, verdict, verdict_reason, credits, verdict_at, "
        "verdict_overdue_at FROM transactions"
    ).fetchall()
    assert row == [("old", 103, None, None, None, None, None)]
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
        conn.execute("UPDATE transactions SET verdict = 'maybe'")
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
        conn.execute("UPDATE transactions SET credits = -1")
    stats = compute_statistics(conn, now=10.0, window_s=3600)
    assert (stats["verdicts_pending"], stats["verdicts_accepted"], stats["credits_total"]) == (
        1,
        0,
        0,
    )
    conn.close()


async def test_the_upgraded_row_reads_as_awaiting_its_verdict(tmp_path: Path) -> None:
    path = tmp_path / "v4.db"
    conn = connect(path)
    migrate(conn, target=4)
    conn.execute(
        "INSERT INTO transactions (id, round_id, miner, state, spec, created_at, updated_at, "
        "finished_at, cid, tx_hash, signed_raw) "
        "VALUES ('old', 3, ?, 'committed', ?, 1, 2, 2, 'bafk', '0x3', x'00')",
        (MINER, spec_to_json(make_spec(3))),
    )
    conn.close()
    journal = Journal(path)
    await journal.open()
    try:
        (rec,) = await journal.awaiting_verdicts()
        assert rec.id == "old" and rec.verdict is None and rec.verdict_overdue_at is None
        status = TransactionStatus.of(rec, now=5.0, history=[])
        assert (status.verdict, status.credits, status.verdict_reason_text) == (
            "awaiting",
            None,
            None,
        )
    finally:
        await journal.close()


async def test_a_verdict_is_written_once_on_a_committed_transaction(journal: Journal) -> None:
    await _committed(journal, "a", 1)
    await journal.create(tx_id="live", spec=make_spec(2), miner=MINER, now=1.0, deadline=None)

    first = await journal.record_verdict(
        "a",
        verdict="accepted",
        reason=0,
        credits=100,
        block=120,
        validator=VALIDATOR,
        now=50.0,
        note="accepted: +100 credits",
    )
    again = await journal.record_verdict(
        "a",
        verdict="rejected",
        reason=5,
        credits=0,
        block=121,
        validator=VALIDATOR,
        now=51.0,
        note="rejected",
    )
    not_committed = await journal.record_verdict(
        "live",
        verdict="accepted",
        reason=0,
        credits=100,
        block=121,
        validator=VALIDATOR,
        now=51.0,
        note="accepted",
    )

    assert first is not None and (first.verdict, first.credits, first.verdict_block) == (
        "accepted",
        100,
        120,
    )
    assert again is None and not_committed is None
    rec = await journal.get("a")
    assert rec is not None and (rec.verdict, rec.credits, rec.verdict_at) == ("accepted", 100, 50.0)
    assert rec.state is TxState.COMMITTED and rec.verdict_validator == VALIDATOR
    history = await journal.history("a")
    assert [h.kind for h in history].count("verdict") == 1
    assert await journal.awaiting_verdicts() == []


async def test_a_rejection_cannot_carry_credits(journal: Journal) -> None:
    await _committed(journal, "a", 1)
    with pytest.raises(ValueError, match="rejected verdict cannot credit 5"):
        await journal.record_verdict(
            "a",
            verdict="rejected",
            reason=5,
            credits=5,
            block=1,
            validator=VALIDATOR,
            now=1.0,
            note="",
        )


async def test_overdue_is_flagged_once_and_never_after_the_verdict(journal: Journal) -> None:
    await _committed(journal, "a", 1)
    await _committed(journal, "b", 2)
    await journal.record_verdict(
        "b",
        verdict="rejected",
        reason=5,
        credits=0,
        block=1,
        validator=VALIDATOR,
        now=1.0,
        note="rejected",
    )

    first = await journal.mark_verdicts_overdue(["a", "b"], now=60.0, note="late")
    second = await journal.mark_verdicts_overdue(["a"], now=70.0, note="late")

    assert [r.id for r in first] == ["a"] and first[0].verdict_overdue_at == 60.0
    assert second == []
    status = TransactionStatus.of(first[0], now=80.0, history=[])
    assert status.verdict == "overdue"


async def test_credits_over_time_is_cumulative_in_verdict_order(journal: Journal) -> None:
    for i, (verdict, credits, at) in enumerate(
        (("accepted", 100, 30.0), ("rejected", 0, 10.0), ("accepted", 250, 20.0)), start=1
    ):
        await _committed(journal, f"t{i}", i)
        await journal.record_verdict(
            f"t{i}",
            verdict=verdict,
            reason=0 if credits else 5,
            credits=credits,
            block=1,
            validator=VALIDATOR,
            now=at,
            note="",
        )

    assert await journal.credits_series() == [(10.0, 0), (20.0, 250), (30.0, 350)]
    assert await journal.credits_series(limit=2) == [(20.0, 250), (30.0, 350)]
    stats = await journal.run(lambda conn: compute_statistics(conn, now=40.0, window_s=3600))
    assert stats["credits_total"] == 350
    assert (stats["verdicts_accepted"], stats["verdicts_rejected"]) == (2, 1)
    assert stats["rejection_reasons"]["segment_mismatch"] == 1
    assert set(stats["rejection_reasons"]) >= {"not_bound", "no_openings", "bad_final"}


async def test_integrity_names_a_verdict_on_an_unfinished_transaction(journal: Journal) -> None:
    await journal.create(tx_id="x", spec=make_spec(1), miner=MINER, now=1.0, deadline=None)
    await journal.run(
        lambda conn: conn.execute(
            "UPDATE transactions SET verdict = 'accepted', credits = 1, verdict_at = 2"
        )
    )
    problems = await journal.integrity_check()
    assert any(p.startswith("verdict on a transaction that is not committed") for p in problems)
