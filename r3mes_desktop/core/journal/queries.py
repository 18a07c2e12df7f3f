"""The journal's reads, as functions of a connection.

`Journal` runs each of them on the journal thread through its one read path (the group
commit's next batch), so a read sees every write queued before it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from r3mes_desktop.core.journal.rows import (
    TX_COLUMNS,
    UNFINISHED_SQL,
    history_in,
    record_of,
)
from r3mes_desktop.core.records import (
    CompensationRow,
    DeadLetter,
    HistoryEntry,
    OutboxRow,
    TransactionRecord,
)
from r3mes_desktop.core.txstate import TxState


def get(conn: sqlite3.Connection, tx_id: str) -> TransactionRecord | None:
    row = conn.execute(
        f"SELECT {TX_COLUMNS} FROM transactions WHERE id = ?",  # noqa: S608
        (tx_id,),
    ).fetchone()
    return record_of(row) if row is not None else None


def snapshot(
    conn: sqlite3.Connection, tx_id: str
) -> tuple[TransactionRecord | None, list[HistoryEntry]]:
    return get(conn, tx_id), history_in(conn, tx_id)


def inline_gradient(conn: sqlite3.Connection, tx_id: str) -> bytes | None:
    found = conn.execute("SELECT data FROM gradients WHERE transaction_id = ?", (tx_id,)).fetchone()
    return None if found is None else bytes(found[0])


def has_gradient_row(conn: sqlite3.Connection, tx_id: str) -> bool:
    row = conn.execute("SELECT 1 FROM gradients WHERE transaction_id = ?", (tx_id,))
    return row.fetchone() is not None


def transactions(
    conn: sqlite3.Connection, states: Sequence[str] | None, limit: int
) -> list[TransactionRecord]:
    sql = f"SELECT {TX_COLUMNS} FROM transactions"  # noqa: S608
    params: list[Any] = []
    if states is not None:
        sql += f" WHERE state IN ({','.join('?' * len(states))})"
        params.extend(states)
    sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
    params.append(limit)
    return [record_of(r) for r in conn.execute(sql, params)]


def unfinished(conn: sqlite3.Connection) -> list[TransactionRecord]:
    """Every non-terminal transaction (uses the partial index: fast on big journals)."""
    rows = conn.execute(
        f"SELECT {TX_COLUMNS} FROM transactions WHERE {UNFINISHED_SQL} "  # noqa: S608
        "ORDER BY created_at"
    )
    return [record_of(r) for r in rows]


def gradient_holders(conn: sqlite3.Connection) -> set[str]:
    """Ids of the transactions whose gradient may still be read: the unfinished ones and
    those with an open dead letter (a retry uploads it again)."""
    rows = conn.execute(
        f"SELECT id FROM transactions WHERE {UNFINISHED_SQL} "  # noqa: S608
        "UNION SELECT transaction_id FROM dead_letters WHERE status = 'open'"
    ).fetchall()
    return {str(row[0]) for row in rows}


def cid_needed_by(
    conn: sqlite3.Connection, cid: str, other_than: str
) -> tuple[str, TxState] | None:
    """A transaction other than `other_than` that still needs `cid` pinned: committed, or
    on its way (not failed, not undone, not being undone). Committed ones first."""
    row = conn.execute(
        "SELECT id, state FROM transactions WHERE cid = ? AND id != ? "
        "AND state NOT IN ('failed', 'rolled_back', 'compensating') "
        "ORDER BY state != 'committed' LIMIT 1",
        (cid, other_than),
    ).fetchone()
    return None if row is None else (str(row[0]), TxState(row[1]))


def submission_owner(conn: sqlite3.Connection, round_id: int, miner: str) -> str | None:
    row = conn.execute(
        "SELECT transaction_id FROM submissions WHERE round_id = ? AND miner = ?",
        (round_id, miner),
    ).fetchone()
    return None if row is None else str(row[0])


def submitted_rounds(conn: sqlite3.Connection, miner: str) -> set[int]:
    """Rounds this miner has a live/committed transaction or a signed submission for."""
    rows = conn.execute(
        "SELECT round_id FROM submissions WHERE miner = ? UNION "
        "SELECT round_id FROM transactions WHERE miner = ? "
        "AND state NOT IN ('failed', 'rolled_back')",
        (miner, miner),
    )
    return {int(r[0]) for r in rows}


def compensations(
    conn: sqlite3.Connection, tx_id: str | None, due_before: float | None
) -> list[CompensationRow]:
    """Pending undo actions, newest first (the reverse order of registration)."""
    sql = (
        "SELECT id, transaction_id, action, target, status, attempts, "
        "next_attempt_at, last_error FROM compensations WHERE status = 'pending'"
    )
    params: list[Any] = []
    if tx_id is not None:
        sql += " AND transaction_id = ?"
        params.append(tx_id)
    if due_before is not None:
        sql += " AND next_attempt_at <= ?"
        params.append(due_before)
    return [CompensationRow(*r) for r in conn.execute(sql + " ORDER BY id DESC", params)]


def outbox(conn: sqlite3.Connection, due_before: float | None) -> list[OutboxRow]:
    sql = (
        "SELECT transaction_id, round_id, attempts, next_attempt_at, last_error, "
        "done_at FROM outbox WHERE done_at IS NULL"
    )
    params: list[Any] = []
    if due_before is not None:
        sql += " AND next_attempt_at <= ?"
        params.append(due_before)
    return [OutboxRow(*r) for r in conn.execute(sql + " ORDER BY created_at", params)]


def dead_letters(
    conn: sqlite3.Connection, status: str | None, dl_id: str | None
) -> list[DeadLetter]:
    sql = (
        "SELECT id, transaction_id, round_id, created_at, reason, category, payload, "
        "status, resolved_at FROM dead_letters"
    )
    clauses, params = [], []
    if status is not None:
        clauses.append("status = ?")
        params.append(status)
    if dl_id is not None:
        clauses.append("id = ?")
        params.append(dl_id)
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)
    return [
        DeadLetter(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]), r[7], r[8])
        for r in conn.execute(sql + " ORDER BY created_at, id", params)
    ]
