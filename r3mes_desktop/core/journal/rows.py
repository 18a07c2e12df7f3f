"""How journal rows map to records and back: column lists, the record decoder, history rows.

Shared by the writes (`change`), the reads (`queries`) and the rules (`lifecycle`), so one
column order serves all three.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Iterable
from typing import Any

from r3mes_desktop.core.records import HistoryEntry, TransactionRecord, spec_from_json
from r3mes_desktop.core.txstate import TxState

TX_COLUMNS = (
    "id, round_id, miner, state, spec, created_at, updated_at, deadline, finished_at, "
    "attempts, next_retry_at, failed_step, error_category, error_message, gradient_hash, "
    "gradient_path, pow_nonce, cid, signed_raw, tx_hash, account_nonce, receipt_block, "
    "compensation, training_step, pinned_before, verdict, verdict_reason, credits, "
    "verdict_block, verdict_validator, verdict_at, verdict_overdue_at, fetched"
)
UPDATABLE = frozenset(
    {
        "deadline",
        "attempts",
        "next_retry_at",
        "failed_step",
        "error_category",
        "error_message",
        "gradient_hash",
        "gradient_path",
        "pow_nonce",
        "cid",
        "signed_raw",
        "tx_hash",
        "account_nonce",
        "receipt_block",
        "compensation",
        "training_step",
        "pinned_before",
        "created_at",
        "fetched",
    }
)
HISTORY_COLUMNS = (
    "transaction_id, ts, kind, old_state, new_state, step, attempt, delay, category, message"
)
UNFINISHED_SQL = "state NOT IN ('committed', 'failed', 'rolled_back')"


_spec = functools.lru_cache(maxsize=1024)(spec_from_json)
"""A transaction's spec never changes and every write of it reads it back: parse it once
(RoundSpec is frozen; records of one transaction share it)."""


def record_of(row: sqlite3.Row | tuple[Any, ...]) -> TransactionRecord:
    return TransactionRecord(
        id=row[0],
        round_id=row[1],
        miner=row[2],
        state=TxState(row[3]),
        spec=_spec(row[4]),
        created_at=row[5],
        updated_at=row[6],
        deadline=row[7],
        finished_at=row[8],
        attempts=row[9],
        next_retry_at=row[10],
        failed_step=row[11],
        error_category=row[12],
        error_message=row[13],
        gradient_hash=row[14],
        gradient_path=row[15],
        pow_nonce=int(row[16]) if row[16] is not None else None,
        cid=row[17],
        signed_raw=bytes(row[18]) if row[18] is not None else None,
        tx_hash=row[19],
        account_nonce=row[20],
        receipt_block=row[21],
        compensation=row[22],
        training_step=row[23],
        pinned_before=None if row[24] is None else bool(row[24]),
        verdict=row[25],
        verdict_reason=row[26],
        credits=row[27],
        verdict_block=row[28],
        verdict_validator=row[29],
        verdict_at=row[30],
        verdict_overdue_at=row[31],
        fetched=_fetched(row[32]),
    )


def _fetched(text: str | None) -> dict[str, dict[str, str]] | None:
    """The FETCH step's journal entry: {"adapter": {"cid", "sha256", "path"}, ...}."""
    if text is None:
        return None
    data = json.loads(text)
    return {str(kind): {str(k): str(v) for k, v in entry.items()} for kind, entry in data.items()}


def fetched_json(fetched: dict[str, dict[str, str]] | None) -> str | None:
    return None if fetched is None else json.dumps(fetched, sort_keys=True)


def history_of(row: tuple[Any, ...]) -> HistoryEntry:
    return HistoryEntry(*row)


_HISTORY_ROW = "(?,?,?,?,?,?,?,?,?,?)"
_HISTORY_CHUNK = 16
_INSERT_HISTORY = [""] + [
    f"INSERT INTO events ({HISTORY_COLUMNS}) VALUES "  # noqa: S608
    + ",".join([_HISTORY_ROW] * n)
    for n in range(1, _HISTORY_CHUNK + 1)
]


def insert_history(conn: sqlite3.Connection, entries: Iterable[HistoryEntry]) -> None:
    """One statement for up to 16 rows (more go in chunks): per-statement cost, not
    per-row cost, dominates at this size."""
    rows = list(entries)
    for start in range(0, len(rows), _HISTORY_CHUNK):
        chunk = rows[start : start + _HISTORY_CHUNK]
        conn.execute(
            _INSERT_HISTORY[len(chunk)],
            [
                value
                for h in chunk
                for value in (
                    h.transaction_id,
                    h.ts,
                    h.kind,
                    h.old_state,
                    h.new_state,
                    h.step,
                    h.attempt,
                    h.delay,
                    h.category,
                    h.message,
                )
            ],
        )


class HistoryRows:
    """History rows of the writes of one group commit, inserted together just before its
    commit (see batch.Deferred); touched only on the journal thread."""

    def __init__(self) -> None:
        self._rows: list[HistoryEntry] = []

    def add(self, entries: Iterable[HistoryEntry]) -> None:
        self._rows.extend(entries)

    def flush(self, conn: sqlite3.Connection) -> None:
        rows, self._rows = self._rows, []
        if rows:
            insert_history(conn, rows)

    def discard(self) -> None:
        self._rows.clear()


@functools.lru_cache(maxsize=256)
def update_sql(names: tuple[str, ...]) -> str:
    """The state-checked UPDATE for these columns (whitelisted: `UPDATABLE` + state)."""
    assignments = ", ".join(f"{name} = ?" for name in names)
    return (
        f"UPDATE transactions SET {assignments} WHERE id = ? AND state = ? "  # noqa: S608
        f"RETURNING {TX_COLUMNS}"
    )


def history_in(conn: sqlite3.Connection, tx_id: str) -> list[HistoryEntry]:
    rows = conn.execute(
        f"SELECT {HISTORY_COLUMNS} FROM events WHERE transaction_id = ? ORDER BY id",  # noqa: S608
        (tx_id,),
    )
    return [history_of(r) for r in rows]
