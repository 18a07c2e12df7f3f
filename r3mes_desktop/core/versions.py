"""The aggregator's journal: one row per model version it publishes, intent before effect.

An aggregator sends chain transactions, so it keeps the same discipline as miners and
validators: the version (its round, bytes hash, CID, loss) is journaled before its bytes
are pinned or anything is signed, the signature before the broadcast. After kill -9 the
row is finished, never recomputed into a second, different version for the round; the
contract accepts exactly one version per id, in order. Rounds the aggregator has looked at
are recorded with their outcome so a pass never reconsiders them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from r3mes_desktop.core.role_journal import RoleJournal

SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    version_id INTEGER PRIMARY KEY,
    round_id INTEGER NOT NULL UNIQUE,
    state TEXT NOT NULL CHECK (state IN ('decided', 'signed', 'posted', 'superseded')),
    cid TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    eval_loss REAL NOT NULL,
    updates INTEGER NOT NULL,
    signed_raw BLOB,
    tx_hash TEXT,
    decided_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS rounds_seen (
    round_id INTEGER PRIMARY KEY,
    outcome TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class VersionRow:
    version_id: int
    round_id: int
    state: str
    cid: str
    sha256: str
    eval_loss: float
    updates: int
    signed_raw: bytes | None
    tx_hash: str | None
    decided_at: float


class VersionJournal(RoleJournal):
    def __init__(self, path: Path) -> None:
        super().__init__(path, SCHEMA)

    def rows(self, *, states: tuple[str, ...] = ()) -> list[VersionRow]:
        sql = "SELECT * FROM versions"
        if states:
            sql += f" WHERE state IN ({','.join('?' * len(states))})"
        with self._lock:
            found = self._db.execute(sql + " ORDER BY version_id", states).fetchall()
        return [VersionRow(*row) for row in found]

    def decide(
        self,
        *,
        version_id: int,
        round_id: int,
        cid: str,
        sha256: str,
        eval_loss: float,
        updates: int,
        now: float,
    ) -> None:
        self._write(
            "INSERT INTO versions (version_id, round_id, state, cid, sha256, eval_loss, "
            "updates, decided_at) VALUES (?, ?, 'decided', ?, ?, ?, ?, ?)",
            (version_id, round_id, cid, sha256, eval_loss, updates, now),
        )

    def signed(self, version_id: int, *, raw: bytes, tx_hash: str) -> None:
        self._write(
            "UPDATE versions SET state = 'signed', signed_raw = ?, tx_hash = ? "
            "WHERE version_id = ? AND state IN ('decided', 'signed')",
            (raw, tx_hash, version_id),
        )

    def finished(self, version_id: int, state: str) -> None:
        self._write("UPDATE versions SET state = ? WHERE version_id = ?", (state, version_id))

    def seen(self, round_id: int, outcome: str) -> None:
        self._write(
            "INSERT OR REPLACE INTO rounds_seen (round_id, outcome) VALUES (?, ?)",
            (round_id, outcome),
        )

    def next_round(self) -> int:
        """The first round not looked at yet (rounds are taken in order)."""
        with self._lock:
            row = self._db.execute("SELECT max(round_id) FROM rounds_seen").fetchone()
        return 1 if row[0] is None else int(row[0]) + 1
