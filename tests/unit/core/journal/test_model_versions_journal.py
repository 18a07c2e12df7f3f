"""The network model's versions in the journal: the schema-6 migration from a schema-5 file,
once-only writes, the statistics, and each transaction's fate (which version its update
went into)."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from r3mes_desktop.core.journal import Change, Journal, connect, migrate
from r3mes_desktop.core.journal.schema import SCHEMA_VERSION
from r3mes_desktop.core.records import ModelVersion, TransactionStatus, spec_to_json
from r3mes_desktop.core.stats import compute_statistics
from r3mes_desktop.core.txstate import TxState
from tests.helpers.fakes import AGGREGATOR, MINER, VALIDATOR, make_spec


def version(version_id: int, round_id: int, *, loss: float = 4.0) -> ModelVersion:
    return ModelVersion(
        version_id=version_id,
        round_id=round_id,
        parent_id=version_id - 1,
        eval_loss=loss,
        updates=2,
        cid=f"bafk{version_id}",
        content_hash=f"{version_id:064x}",
        block_number=100 + version_id,
        aggregator=AGGREGATOR,
        seen_at=50.0,
    )


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    journal = Journal(tmp_path / "journal.db")
    await journal.open()
    yield journal
    await journal.close()


async def committed(
    journal: Journal, round_id: int, *, trained_on: int = 0, verdict: str | None = "accepted"
) -> str:
    """A committed transaction of `round_id` (trained on `trained_on`), with `verdict`."""
    tx_id = f"tx{round_id}"
    spec = dataclasses.replace(make_spec(round_id), model_version=trained_on)
    await journal.create(tx_id=tx_id, spec=spec, miner=MINER, now=10.0, deadline=None)
    await journal.apply(
        Change(
            tx_id,
            11.0,
            fields={"tx_hash": f"0x{round_id:02x}", "signed_raw": b"raw", "cid": "bafk"},
            claim_submission=True,
        )
    )
    await journal.apply(Change(tx_id, 12.0, state=TxState.COMMITTED))
    if verdict is not None:
        await journal.record_verdict(
            tx_id,
            verdict=verdict,
            reason=0 if verdict == "accepted" else 5,
            credits=100 if verdict == "accepted" else 0,
            block=120,
            validator=VALIDATOR,
            now=13.0,
            note=verdict,
        )
    return tx_id


def test_a_schema_5_journal_is_upgraded_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "v5.db"
    conn = connect(path)
    migrate(conn, target=5)
    conn.execute(
        "INSERT INTO transactions (id, round_id, miner, state, spec, created_at, updated_at, "
        "finished_at, cid, tx_hash, signed_raw, receipt_block, verdict, credits, verdict_at) "
        "VALUES ('old', 3, ?, 'committed', ?, 1, 2, 2, 'bafk', '0x3', x'00', 103, "
        "'accepted', 100, 3)",
        (MINER, spec_to_json(make_spec(3))),
    )
    conn.close()

    conn = connect(path)
    assert migrate(conn) == SCHEMA_VERSION
    assert conn.execute("SELECT id, verdict, credits FROM transactions").fetchall() == [
        ("old", "accepted", 100)
    ]
    assert conn.execute("SELECT COUNT(*) FROM model_versions").fetchone() == (0,)
    stats = compute_statistics(conn, now=10.0, window_s=3600)
    assert (stats["model_version"], stats["model_eval_loss"], stats["updates_aggregated"]) == (
        0,
        None,
        0,
    )
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"):  # version 0 is the genesis
        conn.execute("INSERT INTO model_versions VALUES (0, 1, 0, 4.0, 1, 'c', 'h', 1, 'a', 1.0)")
    conn.close()


async def test_an_upgraded_accepted_transaction_waits_for_its_version(tmp_path: Path) -> None:
    path = tmp_path / "v5.db"
    conn = connect(path)
    migrate(conn, target=5)
    conn.execute(
        "INSERT INTO transactions (id, round_id, miner, state, spec, created_at, updated_at, "
        "finished_at, cid, tx_hash, signed_raw, verdict, credits, verdict_at) "
        "VALUES ('old', 3, ?, 'committed', ?, 1, 2, 2, 'bafk', '0x3', x'00', 'accepted', "
        "100, 3)",
        (MINER, spec_to_json(make_spec(3))),
    )
    conn.close()
    journal = Journal(path)
    await journal.open()
    try:
        before = await journal.list_transactions()
        (waiting,) = await journal.statuses(before, now=5.0)
        await journal.record_model_versions([version(1, 3)])
        (went,) = await journal.statuses(await journal.list_transactions(), now=5.0)
    finally:
        await journal.close()

    assert (waiting.model_version, waiting.aggregation, waiting.aggregated_into) == (
        0,
        "waiting",
        None,
    )
    assert waiting.aggregation_text == "not aggregated yet: no version built on version 0 so far"
    assert (went.aggregation, went.aggregated_into) == ("aggregated", 1)
    assert went.aggregation_text == "went into version 1"


async def test_a_version_is_written_once(journal: Journal) -> None:
    first = await journal.record_model_versions([version(2, 5), version(1, 4)])
    again = await journal.record_model_versions([version(2, 5), version(3, 6)])

    assert [v.version_id for v in first] == [1, 2]  # in id order
    assert [v.version_id for v in again] == [3]
    assert await journal.model_version_ids() == {1, 2, 3}
    assert [v.version_id for v in await journal.model_versions(limit=2)] == [2, 3]
    newest = await journal.newest_model_version()
    assert newest == version(3, 6)
    assert await journal.forget_model_versions() == 3
    assert await journal.newest_model_version() is None


async def test_each_transaction_says_what_became_of_its_update(journal: Journal) -> None:
    went = await committed(journal, 3)  # trained on 0; version 1 was built from round 3
    passed = await committed(journal, 4)  # trained on 0 too: version 1 took round 3
    rejected = await committed(journal, 5, verdict="rejected")
    waiting = await committed(journal, 7, trained_on=1)  # no version 2 yet
    awaiting = await committed(journal, 8, trained_on=1, verdict=None)
    await journal.record_model_versions([version(1, 3, loss=3.5)])

    statuses = {
        s.transaction_id: s
        for s in await journal.statuses(await journal.list_transactions(), now=20.0)
    }

    def fate(tx: str) -> tuple[int, str | None, int | None, str | None]:
        s = statuses[tx]
        return s.model_version, s.aggregation, s.aggregated_into, s.aggregation_text

    assert fate(went) == (0, "aggregated", 1, "went into version 1")
    assert fate(passed) == (
        0,
        "passed_over",
        None,
        "not aggregated: version 1 was built from round 3 (one round per version)",
    )
    assert fate(rejected) == (
        0,
        "rejected",
        None,
        "not aggregated: the validators rejected the update",
    )
    assert fate(waiting) == (
        1,
        "waiting",
        None,
        "not aggregated yet: no version built on version 1 so far",
    )
    assert fate(awaiting) == (1, None, None, None)
    stats = await journal.run(lambda conn: compute_statistics(conn, now=20.0, window_s=60))
    assert (stats["model_version"], stats["model_eval_loss"]) == (1, 3.5)
    assert stats["updates_aggregated"] == 1


def test_a_status_without_the_journal_keeps_the_version_it_trained_on() -> None:
    """`TransactionStatus.of` without a successor (the saga's own status reads)."""
    from r3mes_desktop.core.records import TransactionRecord

    spec = dataclasses.replace(make_spec(9), model_version=4)
    rec = TransactionRecord(
        id="t", round_id=9, miner=MINER, state=TxState.TRAINING, spec=spec,
        created_at=1.0, updated_at=1.0, deadline=None,
    )  # fmt: skip

    status = TransactionStatus.of(rec, now=2.0, history=[])

    assert (status.model_version, status.aggregation, status.aggregated_into) == (4, None, None)
    assert status.to_dict()["model_version"] == 4
