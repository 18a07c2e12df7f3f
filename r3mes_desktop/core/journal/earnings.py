"""What the journal keeps of the chain's verdicts: reads and writes of one concept.

A verdict is read from the contract, never decided by the miner, so recording it is an
update of a committed transaction (no saga state changes), guarded in SQL: only a committed
transaction without a verdict takes one, so a verdict read twice is written once. The
functions run on the journal thread, inside the group commit (writes) or after it (reads).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from r3mes_desktop.core.journal.rows import TX_COLUMNS, HistoryRows, record_of
from r3mes_desktop.core.records import HistoryEntry, TransactionRecord

VERDICTS = ("accepted", "rejected")

_AWAITING = "state = 'committed' AND verdict IS NULL"


def awaiting(conn: sqlite3.Connection, limit: int) -> list[TransactionRecord]:
    """Committed transactions with no verdict yet, the most recently finished first (the
    partial index `transactions_awaiting_verdict` keeps this cheap on a big journal)."""
    rows = conn.execute(
        f"SELECT {TX_COLUMNS} FROM transactions WHERE {_AWAITING} "  # noqa: S608
        "ORDER BY finished_at DESC LIMIT ?",
        (limit,),
    )
    return [record_of(r) for r in rows]


def record_verdict(
    conn: sqlite3.Connection,
    history: HistoryRows,
    *,
    tx_id: str,
    verdict: str,
    reason: int,
    credits: int,
    block: int,
    validator: str,
    now: float,
    note: str,
) -> TransactionRecord | None:
    """Write the verdict on a committed transaction that has none; None (nothing written)
    when it already has one or is not committed."""
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
    if credits < 0 or (verdict == "rejected" and credits != 0):
        raise ValueError(f"a {verdict} verdict cannot credit {credits}")
    row = conn.execute(
        "UPDATE transactions SET verdict = ?, verdict_reason = ?, credits = ?, "  # noqa: S608
        "verdict_block = ?, verdict_validator = ?, verdict_at = ? "
        f"WHERE id = ? AND {_AWAITING} RETURNING {TX_COLUMNS}",
        (verdict, reason, credits, block, validator, now, tx_id),
    ).fetchone()
    if row is None:
        return None
    history.add([HistoryEntry(tx_id, now, "verdict", message=note)])
    return record_of(row)


def mark_overdue(
    conn: sqlite3.Connection,
    history: HistoryRows,
    *,
    tx_ids: Sequence[str],
    now: float,
    note: str,
) -> list[TransactionRecord]:
    """Flag these transactions as overdue for a verdict, each at most once ever; returns
    the ones flagged now (a second call, or one after the verdict came, flags nothing)."""
    flagged: list[TransactionRecord] = []
    for tx_id in tx_ids:
        row = conn.execute(
            f"UPDATE transactions SET verdict_overdue_at = ? WHERE id = ? AND {_AWAITING} "  # noqa: S608
            f"AND verdict_overdue_at IS NULL RETURNING {TX_COLUMNS}",
            (now, tx_id),
        ).fetchone()
        if row is not None:
            flagged.append(record_of(row))
    history.add(HistoryEntry(r.id, now, "note", message=note) for r in flagged)
    return flagged


def credits_series(conn: sqlite3.Connection, limit: int) -> list[tuple[float, int]]:
    """(when read, credits earned in total by then) for the latest `limit` verdicts, oldest
    first: the credits-over-time chart, exact across restarts."""
    rows = conn.execute(
        "SELECT verdict_at, total FROM (SELECT verdict_at, "
        "SUM(credits) OVER (ORDER BY verdict_at, id) AS total FROM transactions "
        "WHERE verdict IS NOT NULL) ORDER BY verdict_at DESC LIMIT ?",
        (limit,),
    ).fetchall()
    return [(float(at), int(total or 0)) for at, total in reversed(rows)]
