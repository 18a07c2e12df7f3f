"""Durable account nonces and the signed transactions that used them (sqlite, data dir).

Why durable: after a crash the node may not have seen a transaction we signed (crash before
broadcast), so "ask the node" alone would hand the same nonce to a different transaction and
one of them would be lost. The store remembers every signed transaction by its payload, so
signing the same call again after a restart returns the very same bytes (idempotent), and it
reconciles with the node's pending count so it never falls behind a wallet used elsewhere.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS next_nonce (
    account TEXT NOT NULL, chain_id INTEGER NOT NULL, next INTEGER NOT NULL,
    PRIMARY KEY (account, chain_id));
CREATE TABLE IF NOT EXISTS signed (
    tx_hash TEXT PRIMARY KEY, account TEXT NOT NULL, chain_id INTEGER NOT NULL,
    nonce INTEGER NOT NULL, payload_key TEXT NOT NULL, raw BLOB NOT NULL,
    created REAL NOT NULL, state TEXT NOT NULL DEFAULT 'signed');
CREATE INDEX IF NOT EXISTS signed_payload ON signed (payload_key, state);
"""


@dataclass(frozen=True)
class SignedRecord:
    tx_hash: str
    nonce: int
    payload_key: str
    raw: bytes
    created: float
    state: str


class NonceStore:
    """Thread-safe; each method is one short sqlite transaction (WAL, synchronous=FULL)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def next_nonce(self, account: str, chain_id: int) -> int:
        with self._lock:
            row = self._db.execute(
                "SELECT next FROM next_nonce WHERE account=? AND chain_id=?",
                (account.lower(), chain_id),
            ).fetchone()
        return int(row[0]) if row else 0

    def find_payload(self, payload_key: str) -> SignedRecord | None:
        """The live (not superseded) signed transaction for this exact call, if any."""
        with self._lock:
            row = self._db.execute(
                "SELECT tx_hash, nonce, payload_key, raw, created, state FROM signed "
                "WHERE payload_key=? AND state='signed' ORDER BY nonce DESC LIMIT 1",
                (payload_key,),
            ).fetchone()
        return SignedRecord(*row) if row else None

    def unlanded_from(self, account: str, chain_id: int, first_nonce: int) -> list[SignedRecord]:
        """Live signed transactions with nonce >= first_nonce (the node has not counted them)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT tx_hash, nonce, payload_key, raw, created, state FROM signed "
                "WHERE account=? AND chain_id=? AND nonce>=? AND state='signed' ORDER BY nonce",
                (account.lower(), chain_id, first_nonce),
            ).fetchall()
        return [SignedRecord(*row) for row in rows]

    def record(
        self,
        *,
        account: str,
        chain_id: int,
        record: SignedRecord,
        supersede: str | None = None,
    ) -> None:
        """Store a signed tx and advance next_nonce past it, atomically."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if supersede is not None:
                    self._db.execute(
                        "UPDATE signed SET state='superseded' WHERE tx_hash=?", (supersede,)
                    )
                self._db.execute(
                    "INSERT OR REPLACE INTO signed VALUES (?,?,?,?,?,?,?,?)",
                    (
                        record.tx_hash.lower(),
                        account.lower(),
                        chain_id,
                        record.nonce,
                        record.payload_key,
                        record.raw,
                        record.created,
                        "signed",
                    ),
                )
                self._db.execute(
                    "INSERT INTO next_nonce VALUES (?,?,?) ON CONFLICT(account, chain_id) "
                    "DO UPDATE SET next=max(next, excluded.next)",
                    (account.lower(), chain_id, record.nonce + 1),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def mark(self, tx_hash: str, state: str) -> None:
        with self._lock:
            self._db.execute("UPDATE signed SET state=? WHERE tx_hash=?", (state, tx_hash.lower()))

    def close(self) -> None:
        with self._lock:
            self._db.close()
