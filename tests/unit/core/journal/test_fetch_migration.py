"""Journal migration 7: the transactions table rebuilt so its state CHECK accepts 'fetch'
and a `fetched` column journals what FETCH verified; nothing else may change."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from r3mes_desktop.core.errors import ValidationError
from r3mes_desktop.core.journal import Change, Journal, connect, migrate, schema
from r3mes_desktop.core.records import spec_to_json
from r3mes_desktop.core.txstate import TxState
from tests.helpers.fakes import MINER, make_spec

V6_STATES = (
    "pending",
    "training",
    "ipfs_upload",
    "blockchain_submit",
    "task_complete",
    "committed",
    "compensating",
    "failed",
    "rolled_back",
)
TABLES = (
    "transactions",
    "submissions",
    "events",
    "outbox",
    "compensations",
    "dead_letters",
    "gradients",
    "model_versions",
)


def _v6_journal(path: Path) -> None:
    """A version-6 journal with a transaction in every state, verdicts, history, and a row
    in every table that references transactions(id)."""
    conn = connect(path)
    assert migrate(conn, target=6) == 6
    for n, state in enumerate(V6_STATES, start=1):
        committed = state == "committed"
        conn.execute(
            "INSERT INTO transactions (id, round_id, miner, state, spec, created_at, "
            "updated_at, deadline, finished_at, attempts, next_retry_at, failed_step, "
            "error_category, error_message, gradient_hash, gradient_path, pow_nonce, cid, "
            "signed_raw, tx_hash, account_nonce, receipt_block, compensation, training_step, "
            "pinned_before, verdict, verdict_reason, credits, verdict_block, "
            "verdict_validator, verdict_at, verdict_overdue_at) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                *(f"tx{n}", n, MINER, state, spec_to_json(make_spec(n)), n + 0.5, n + 1.5),
                *(n + 100.0, n + 2.0 if state in ("committed", "failed") else None, n % 3),
                *(n + 7.0, "training" if state == "failed" else None, None, None),
                *("ab" * 32, f"/g/{n}", str(2**63 + n), f"bafk{n}", bytes([n]) * 3),
                *(f"0x{n:02x}", n, 200 + n, "pending" if state == "compensating" else None),
                *(n * 10, n % 2, "accepted" if committed else None, 0 if committed else None),
                *(50 if committed else None, 300 if committed else None),
                *("0xval" if committed else None, 9.5 if committed else None, None),
            ),
        )
        conn.execute(
            "INSERT INTO events (transaction_id, ts, kind, old_state, new_state, step, "
            "attempt, delay, category, message) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (f"tx{n}", n, "transition", "pending", state, None, None, None, None, "m"),
        )
    conn.execute(
        "INSERT INTO submissions VALUES (4, ?, 'tx4', '0x04', 4.0), (6, ?, 'tx6', '0x06', 6.0)",
        (MINER, MINER),
    )
    conn.execute(
        "INSERT INTO outbox (transaction_id, round_id, created_at, next_attempt_at) "
        "VALUES ('tx5', 5, 5.0, 6.0)"
    )
    conn.execute(
        "INSERT INTO compensations (transaction_id, action, target, status, next_attempt_at, "
        "created_at, updated_at) VALUES ('tx7', 'unpin', 'bafk7', 'pending', 8, 7, 7)"
    )
    conn.execute(
        "INSERT INTO dead_letters VALUES ('dl', 'tx8', 8, 8.0, 'r', 'network', '{}', 'open', NULL)"
    )
    conn.execute("INSERT INTO gradients VALUES ('tx3', x'0102')")
    conn.execute(
        "INSERT INTO model_versions VALUES (1, 2, 0, 3.5, 2, 'bafkv', 'cd', 40, '0xagg', 41.0)"
    )
    conn.close()


def _rows(conn: sqlite3.Connection) -> dict[str, list[tuple[object, ...]]]:
    return {t: conn.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall() for t in TABLES}


def _indexes(conn: sqlite3.Connection) -> dict[str, str]:
    rows = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
    ).fetchall()
    return {name: re.sub(r"\s+", " ", sql).strip() for name, sql in rows}


def test_a_version_6_journal_upgrades_with_nothing_lost(tmp_path: Path) -> None:
    path = tmp_path / "v6.db"
    _v6_journal(path)
    conn = connect(path)
    before, indexes = _rows(conn), _indexes(conn)
    assert len(before["transactions"]) == len(V6_STATES)

    assert migrate(conn) == schema.SCHEMA_VERSION == 7
    after = _rows(conn)
    # every row of every table as it was; transactions gain an empty `fetched`
    assert after["transactions"] == [(*row, None) for row in before["transactions"]]
    for table in TABLES[1:]:
        assert after[table] == before[table], table
    assert _indexes(conn) == indexes  # every index, the partial unique one included, exactly
    assert conn.execute("PRAGMA foreign_keys").fetchone() == (1,)
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)

    # the new CHECK takes 'fetch' and still refuses what is no state; the others hold
    conn.execute("UPDATE transactions SET state = 'fetch' WHERE id = 'tx1'")
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
        conn.execute("UPDATE transactions SET state = 'fetching' WHERE id = 'tx1'")
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
        conn.execute("UPDATE transactions SET verdict = 'maybe' WHERE id = 'tx6'")
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):  # one live tx per round
        conn.execute(
            "INSERT INTO transactions (id, round_id, miner, state, spec, created_at, "
            "updated_at) VALUES ('again', 1, ?, 'pending', '{}', 1, 1)",
            (MINER,),
        )
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):  # references enforced
        conn.execute("INSERT INTO gradients VALUES ('nobody', x'00')")
    conn.close()


async def test_an_upgraded_journal_opens_and_drives_a_fetch(tmp_path: Path) -> None:
    path = tmp_path / "v6.db"
    _v6_journal(path)
    journal = Journal(path)
    await journal.open()
    try:
        old = await journal.get("tx2")
        assert old is not None and old.state is TxState.TRAINING and old.fetched is None
        rec = await journal.create(
            tx_id="new",
            spec=make_spec(50),
            miner=MINER,
            now=60.0,
            deadline=None,
            start=TxState.FETCH,
        )
        assert rec.state is TxState.FETCH
        fetched = {"adapter": {"cid": "bafka", "sha256": "ee" * 32, "path": "/m/a"}}
        rec = await journal.apply(
            Change(
                "new",
                61.0,
                state=TxState.TRAINING,
                expect=frozenset({TxState.FETCH}),
                fields={"fetched": fetched},
            )
        )
        assert rec.fetched == fetched
        again = await journal.get("new")
        assert again is not None and again.fetched == fetched
        steps = [(h.old_state, h.new_state) for h in await journal.history("new")]
        assert steps == [(None, "pending"), ("pending", "fetch"), ("fetch", "training")]
    finally:
        await journal.close()


def _with_statement_after_copy(statement: str) -> tuple[tuple[str, ...], ...]:
    """Migration 7 with `statement` right after its copy of the rows."""
    seventh = list(schema.MIGRATIONS[6])
    copy = next(i for i, s in enumerate(seventh) if s.startswith("INSERT INTO transactions_v7"))
    seventh.insert(copy + 1, statement)
    return (*schema.MIGRATIONS[:6], tuple(seventh))


@pytest.mark.parametrize(
    ("statement", "error"),
    [
        # a crash after the copy (any failing statement stands for it)
        ("INSERT INTO no_such_table VALUES (1)", sqlite3.OperationalError),
        # a copy that lost a referenced row: the foreign key check refuses to commit it
        ("DELETE FROM transactions_v7 WHERE id = 'tx4'", ValidationError),
    ],
)
def test_a_failed_migration_leaves_version_6_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, statement: str, error: type[Exception]
) -> None:
    path = tmp_path / "v6.db"
    _v6_journal(path)
    conn = connect(path)
    before, indexes = _rows(conn), _indexes(conn)
    monkeypatch.setattr(schema, "MIGRATIONS", _with_statement_after_copy(statement))

    with pytest.raises(error):
        migrate(conn, target=7)

    assert conn.execute("PRAGMA user_version").fetchone() == (6,)
    assert _rows(conn) == before
    assert _indexes(conn) == indexes
    assert conn.execute(
        "SELECT COUNT(*) FROM sqlite_master WHERE name = 'transactions_v7'"
    ).fetchone() == (0,)
    assert conn.execute("PRAGMA foreign_keys").fetchone() == (1,)
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"):  # still the version-6 CHECK
        conn.execute("UPDATE transactions SET state = 'fetch' WHERE id = 'tx1'")

    monkeypatch.undo()  # the real migration then succeeds on the same file
    assert migrate(conn) == 7
    assert len(_rows(conn)["transactions"]) == len(V6_STATES)
    conn.close()


def test_foreign_keys_stay_off_on_a_connection_that_had_them_off(tmp_path: Path) -> None:
    path = tmp_path / "v6.db"
    _v6_journal(path)
    conn = sqlite3.connect(str(path), isolation_level=None)
    assert conn.execute("PRAGMA foreign_keys").fetchone() == (0,)
    assert migrate(conn) == 7
    assert conn.execute("PRAGMA foreign_keys").fetchone() == (0,)
    conn.close()
