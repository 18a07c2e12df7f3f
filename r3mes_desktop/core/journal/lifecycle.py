"""Rules the journal applies inside the commit that makes them true.

A gradient is released (its row deleted in the commit, its file just after) once nobody
will read it again; a dead letter whose round another transaction committed closes itself.
Both run on the journal thread, inside the group commit's transaction.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from r3mes_desktop.core.journal import queries
from r3mes_desktop.core.journal.rows import HistoryRows
from r3mes_desktop.core.records import HistoryEntry, TransactionRecord
from r3mes_desktop.core.txstate import TxState


def release_gradient_if_unneeded(
    conn: sqlite3.Connection, rec: TransactionRecord, removals: list[Path]
) -> None:
    """Delete `rec`'s gradient row (in this commit) and queue its file (deleted after it)
    if nobody will read it again: committed, or undone with no open dead letter (a retry
    would upload it again)."""
    if rec.state is TxState.COMMITTED:
        released = True
    elif rec.state in (TxState.ROLLED_BACK, TxState.FAILED):
        open_letter = conn.execute(
            "SELECT 1 FROM dead_letters WHERE transaction_id = ? AND status = 'open'",
            (rec.id,),
        ).fetchone()
        released = open_letter is None
    else:
        released = False
    if released:
        conn.execute("DELETE FROM gradients WHERE transaction_id = ?", (rec.id,))
        if rec.gradient_path:
            removals.append(Path(rec.gradient_path))


def supersede_letters(
    conn: sqlite3.Connection,
    history: HistoryRows,
    removals: list[Path],
    *,
    now: float,
    committed: TransactionRecord | None = None,
) -> int:
    """Close the open dead letters of rounds a transaction has committed (all of them, or
    `committed`'s round): their retry could only fail, so left open they would wait forever.
    Each closed letter's transaction gets a history line, and its gradient goes with the
    letter. Returns how many were closed."""
    settled = "SELECT c.id, c.round_id, c.miner FROM transactions c WHERE c.state = 'committed'"
    letters = "status = 'open'"
    params: tuple[Any, ...] = ()
    if committed is not None:  # every commit asks: only its round's open letters are read
        settled += " AND c.id = ?"
        letters += " AND round_id = ?"
        params = (committed.id,)
    rows = conn.execute(
        f"WITH settled AS ({settled}) "  # noqa: S608 - fixed SQL, values are parameters
        "UPDATE dead_letters SET status = 'superseded', resolved_at = ? "
        f"WHERE {letters} AND transaction_id IN (SELECT t.id FROM transactions t "
        "JOIN settled s ON s.round_id = t.round_id AND s.miner = t.miner AND s.id != t.id) "
        "RETURNING transaction_id, round_id",
        (*params, now, *(() if committed is None else (committed.round_id,))),
    ).fetchall()
    entries = []
    for tx_id, round_id in rows:
        winner = conn.execute(
            "SELECT id FROM transactions WHERE round_id = ? AND state = 'committed' "
            "AND miner = (SELECT miner FROM transactions WHERE id = ?)",
            (round_id, tx_id),
        ).fetchone()
        entries.append(
            HistoryEntry(
                tx_id,
                now,
                "note",
                message=f"dead letter closed as superseded: round {round_id} was "
                f"committed by transaction {winner[0] if winner else '?'}",
            )
        )
        rec = queries.get(conn, tx_id)
        if rec is not None:
            release_gradient_if_unneeded(conn, rec, removals)
    history.add(entries)
    return len(rows)
