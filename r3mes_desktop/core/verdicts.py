"""The validator's journal: one row per (round, miner), intent before effect.

A validator is a role that sends chain transactions, so it keeps the miner's discipline: the
verdict is journaled (`decided`) before it is signed, the signed bytes and hash (`signed`)
before they are broadcast, and `posted` once the receipt is in. After kill -9 a `decided`
row is signed again (the nonce store returns the same signature for the same payload), a
`signed` row is re-broadcast as the same bytes, and the contract's "verdict exists" guard
makes a second verdict for one submission impossible even across validators.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from r3mes_desktop.core.role_journal import RoleJournal

SCHEMA = """
CREATE TABLE IF NOT EXISTS verdicts (
    round_id INTEGER NOT NULL,
    miner TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('decided', 'signed', 'posted', 'settled')),
    accepted INTEGER NOT NULL,
    reason INTEGER NOT NULL,
    detail TEXT NOT NULL,
    steps_recomputed INTEGER NOT NULL DEFAULT 0,
    verify_s REAL NOT NULL DEFAULT 0,
    signed_raw BLOB,
    tx_hash TEXT,
    decided_at REAL NOT NULL,
    posted_at REAL,
    PRIMARY KEY (round_id, miner)
);
CREATE TABLE IF NOT EXISTS cursors (
    round_id INTEGER PRIMARY KEY,
    next_index INTEGER NOT NULL
);
"""
OPEN_STATES = ("decided", "signed")


@dataclass(frozen=True)
class VerdictRow:
    round_id: int
    miner: str
    state: str
    accepted: bool
    reason: int
    detail: str
    steps_recomputed: int
    verify_s: float
    signed_raw: bytes | None
    tx_hash: str | None
    decided_at: float
    posted_at: float | None


class VerdictJournal(RoleJournal):
    """Small and synchronous (each call is one short SQLite transaction, fsynced)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, SCHEMA)

    def get(self, round_id: int, miner: str) -> VerdictRow | None:
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM verdicts WHERE round_id = ? AND miner = ?", (round_id, miner)
            ).fetchone()
        return None if row is None else _row(row)

    def rows(self, *, states: tuple[str, ...] | None = None) -> list[VerdictRow]:
        sql = "SELECT * FROM verdicts"
        args: tuple[object, ...] = ()
        if states:
            sql += f" WHERE state IN ({','.join('?' * len(states))})"
            args = states
        with self._lock:
            found = self._db.execute(sql + " ORDER BY round_id, miner", args).fetchall()
        return [_row(r) for r in found]

    def decide(
        self,
        round_id: int,
        miner: str,
        *,
        accepted: bool,
        reason: int,
        detail: str,
        steps_recomputed: int,
        verify_s: float,
        now: float,
    ) -> None:
        """Record the verdict before anything is signed; a decided row is never re-decided."""
        self._write(
            "INSERT OR IGNORE INTO verdicts (round_id, miner, state, accepted, reason, detail, "
            "steps_recomputed, verify_s, decided_at) VALUES (?, ?, 'decided', ?, ?, ?, ?, ?, ?)",
            (
                round_id,
                miner,
                int(accepted),
                reason,
                detail,
                steps_recomputed,
                verify_s,
                now,
            ),
        )

    def signed(self, round_id: int, miner: str, *, raw: bytes, tx_hash: str) -> None:
        self._write(
            "UPDATE verdicts SET state = 'signed', signed_raw = ?, tx_hash = ? "
            "WHERE round_id = ? AND miner = ? AND state IN ('decided', 'signed')",
            (raw, tx_hash, round_id, miner),
        )

    def posted(self, round_id: int, miner: str, *, now: float, state: str = "posted") -> None:
        """`posted`: our verdict is on chain; `settled`: another validator's was first."""
        self._write(
            "UPDATE verdicts SET state = ?, posted_at = ? WHERE round_id = ? AND miner = ?",
            (state, now, round_id, miner),
        )

    def cursor(self, round_id: int) -> int:
        with self._lock:
            row = self._db.execute(
                "SELECT next_index FROM cursors WHERE round_id = ?", (round_id,)
            ).fetchone()
        return 0 if row is None else int(row[0])

    def advance(self, round_id: int, next_index: int) -> None:
        self._write(
            "INSERT INTO cursors (round_id, next_index) VALUES (?, ?) ON CONFLICT(round_id) "
            "DO UPDATE SET next_index = max(next_index, excluded.next_index)",
            (round_id, next_index),
        )


def _row(row: Any) -> VerdictRow:
    round_id, miner, state, accepted, reason, detail, steps, verify_s, raw, tx_hash, at, done = row
    return VerdictRow(
        round_id=int(round_id),
        miner=str(miner),
        state=str(state),
        accepted=bool(accepted),
        reason=int(reason),
        detail=str(detail),
        steps_recomputed=int(steps),
        verify_s=float(verify_s),
        signed_raw=None if raw is None else bytes(raw),
        tx_hash=None if tx_hash is None else str(tx_hash),
        decided_at=float(at),
        posted_at=None if done is None else float(done),
    )
