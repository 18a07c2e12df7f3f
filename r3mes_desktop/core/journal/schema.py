"""The journal's schema as an ordered list of migrations.

`PRAGMA user_version` records how many have been applied; opening a journal applies the
missing ones in one sqlite transaction each, so an older journal is upgraded in place and a
crash mid-upgrade leaves the previous version intact. Never edit a shipped migration: append.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from r3mes_desktop.core.errors import ValidationError

_STATES = (
    "'pending','training','ipfs_upload','blockchain_submit','task_complete',"
    "'committed','compensating','failed','rolled_back'"
)
_STATES_V7 = f"'fetch',{_STATES}"

_TX_COLUMNS_V6 = (
    "id, round_id, miner, state, spec, created_at, updated_at, deadline, finished_at, "
    "attempts, next_retry_at, failed_step, error_category, error_message, gradient_hash, "
    "gradient_path, pow_nonce, cid, signed_raw, tx_hash, account_nonce, receipt_block, "
    "compensation, training_step, pinned_before, verdict, verdict_reason, credits, "
    "verdict_block, verdict_validator, verdict_at, verdict_overdue_at"
)

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: the base schema.
    (
        f"""
        CREATE TABLE transactions (
            id TEXT PRIMARY KEY,
            round_id INTEGER NOT NULL,
            miner TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ({_STATES})),
            spec TEXT NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            deadline REAL,
            finished_at REAL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_retry_at REAL,
            failed_step TEXT,
            error_category TEXT,
            error_message TEXT,
            gradient_hash TEXT,
            gradient_path TEXT,
            pow_nonce TEXT,
            cid TEXT,
            signed_raw BLOB,
            tx_hash TEXT,
            account_nonce INTEGER,
            receipt_block INTEGER,
            compensation TEXT
        )
        """,
        # At most one live or committed transaction per (round, miner): a failed or rolled
        # back one may be followed by a new attempt.
        """
        CREATE UNIQUE INDEX transactions_live_round ON transactions(round_id, miner)
        WHERE state NOT IN ('failed', 'rolled_back')
        """,
        """
        CREATE INDEX transactions_unfinished ON transactions(state)
        WHERE state NOT IN ('committed', 'failed', 'rolled_back')
        """,
        "CREATE INDEX transactions_finished ON transactions(finished_at)",
        # One signed submission per (round, miner), ever: the exactly-once guard.
        """
        CREATE TABLE submissions (
            round_id INTEGER NOT NULL,
            miner TEXT NOT NULL,
            transaction_id TEXT NOT NULL REFERENCES transactions(id),
            tx_hash TEXT NOT NULL,
            signed_at REAL NOT NULL,
            PRIMARY KEY (round_id, miner)
        )
        """,
        """
        CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            transaction_id TEXT NOT NULL,
            ts REAL NOT NULL,
            kind TEXT NOT NULL,
            old_state TEXT,
            new_state TEXT,
            step TEXT,
            attempt INTEGER,
            delay REAL,
            category TEXT,
            message TEXT
        )
        """,
        "CREATE INDEX events_transaction ON events(transaction_id, id)",
        """
        CREATE TABLE outbox (
            transaction_id TEXT PRIMARY KEY REFERENCES transactions(id),
            round_id INTEGER NOT NULL,
            created_at REAL NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at REAL NOT NULL,
            last_error TEXT,
            done_at REAL
        )
        """,
        "CREATE INDEX outbox_pending ON outbox(next_attempt_at) WHERE done_at IS NULL",
        """
        CREATE TABLE compensations (
            id INTEGER PRIMARY KEY,
            transaction_id TEXT NOT NULL REFERENCES transactions(id),
            action TEXT NOT NULL,
            target TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('pending', 'done')),
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at REAL NOT NULL,
            last_error TEXT,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            UNIQUE (transaction_id, action, target)
        )
        """,
        "CREATE INDEX compensations_pending ON compensations(next_attempt_at) "
        "WHERE status = 'pending'",
        """
        CREATE TABLE dead_letters (
            id TEXT PRIMARY KEY,
            transaction_id TEXT NOT NULL REFERENCES transactions(id),
            round_id INTEGER NOT NULL,
            created_at REAL NOT NULL,
            reason TEXT NOT NULL,
            category TEXT NOT NULL,
            payload TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('open', 'retried', 'discarded')),
            resolved_at REAL
        )
        """,
    ),
    # 2: the last known training step (for "resume from step N") and a time index for the
    # error analytics' sliding window.
    (
        "ALTER TABLE transactions ADD COLUMN training_step INTEGER",
        "CREATE INDEX events_errors ON events(ts) WHERE category IS NOT NULL",
    ),
    # 3: gradients small enough to live in the journal (see Journal.inline_gradient_max):
    # they ride the commit that names them, with no file of their own to fsync.
    (
        """
        CREATE TABLE gradients (
            transaction_id TEXT PRIMARY KEY REFERENCES transactions(id),
            data BLOB NOT NULL
        )
        """,
    ),
    # 4: whether the content store already pinned a transaction's CID before its first add
    # (an undo removes only what its own transaction added), an index to find the
    # transactions that reference a CID before unpinning it, and dead letters that close
    # themselves once their round is settled by another transaction ('superseded').
    (
        "ALTER TABLE transactions ADD COLUMN pinned_before INTEGER",
        "CREATE INDEX transactions_cid ON transactions(cid) WHERE cid IS NOT NULL",
        """
        CREATE TABLE dead_letters_v4 (
            id TEXT PRIMARY KEY,
            transaction_id TEXT NOT NULL REFERENCES transactions(id),
            round_id INTEGER NOT NULL,
            created_at REAL NOT NULL,
            reason TEXT NOT NULL,
            category TEXT NOT NULL,
            payload TEXT NOT NULL,
            status TEXT NOT NULL
                CHECK (status IN ('open', 'retried', 'discarded', 'superseded')),
            resolved_at REAL
        )
        """,
        "INSERT INTO dead_letters_v4 SELECT * FROM dead_letters",
        "DROP TABLE dead_letters",
        "ALTER TABLE dead_letters_v4 RENAME TO dead_letters",
        # a commit looks for its round's open letters (lifecycle.supersede_letters)
        "CREATE INDEX dead_letters_open ON dead_letters(round_id) WHERE status = 'open'",
    ),
    # 5: what the chain's validators said of each committed submission. A verdict is read
    # from the contract, never decided here, so it is an update of a committed transaction:
    # accepted or rejected, the reason code, the credits it earned, the block that carried
    # it, the validator and when it was read. `verdict_overdue_at` records that the miner
    # was told "no verdict after N blocks" (once per transaction, across restarts). The
    # partial indexes serve the watcher (committed, no verdict yet) and the credits series.
    (
        "ALTER TABLE transactions ADD COLUMN verdict TEXT "
        "CHECK (verdict IN ('accepted', 'rejected'))",
        "ALTER TABLE transactions ADD COLUMN verdict_reason INTEGER",
        "ALTER TABLE transactions ADD COLUMN credits INTEGER CHECK (credits >= 0)",
        "ALTER TABLE transactions ADD COLUMN verdict_block INTEGER",
        "ALTER TABLE transactions ADD COLUMN verdict_validator TEXT",
        "ALTER TABLE transactions ADD COLUMN verdict_at REAL",
        "ALTER TABLE transactions ADD COLUMN verdict_overdue_at REAL",
        """
        CREATE INDEX transactions_awaiting_verdict ON transactions(finished_at)
        WHERE state = 'committed' AND verdict IS NULL
        """,
        "CREATE INDEX transactions_verdicts ON transactions(verdict_at) WHERE verdict IS NOT NULL",
    ),
    # 6: the network model's versions as the contract publishes them (read, never decided
    # here; `core.model_watch`): kept so the loss chart, the statistics and the CLI answer
    # without the chain, and so an update's fate (which version it went into) is a join.
    # The index finds the version that aggregated a round.
    (
        """
        CREATE TABLE model_versions (
            version_id INTEGER PRIMARY KEY CHECK (version_id > 0),
            round_id INTEGER NOT NULL,
            parent_id INTEGER NOT NULL,
            eval_loss REAL NOT NULL,
            updates INTEGER NOT NULL,
            cid TEXT NOT NULL,
            content_hash TEXT NOT NULL,
            block_number INTEGER NOT NULL,
            aggregator TEXT NOT NULL,
            seen_at REAL NOT NULL
        )
        """,
        "CREATE INDEX model_versions_round ON model_versions(round_id)",
    ),
    # 7: the FETCH step (the round's model version and dataset fetched and verified before
    # training): the state CHECK accepts 'fetch', and `fetched` journals what it fetched
    # (JSON: {"adapter": {"cid", "sha256", "path"}, "dataset": {...}}). SQLite cannot alter
    # a CHECK, so the table is rebuilt (sqlite.org/lang_altertable.html, section 7) with
    # foreign keys off around it (`REBUILDS`): create, copy, drop, rename, then every index
    # of the old table exactly as it was.
    (
        f"""
        CREATE TABLE transactions_v7 (
            id TEXT PRIMARY KEY,
            round_id INTEGER NOT NULL,
            miner TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ({_STATES_V7})),
            spec TEXT NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            deadline REAL,
            finished_at REAL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_retry_at REAL,
            failed_step TEXT,
            error_category TEXT,
            error_message TEXT,
            gradient_hash TEXT,
            gradient_path TEXT,
            pow_nonce TEXT,
            cid TEXT,
            signed_raw BLOB,
            tx_hash TEXT,
            account_nonce INTEGER,
            receipt_block INTEGER,
            compensation TEXT,
            training_step INTEGER,
            pinned_before INTEGER,
            verdict TEXT CHECK (verdict IN ('accepted', 'rejected')),
            verdict_reason INTEGER,
            credits INTEGER CHECK (credits >= 0),
            verdict_block INTEGER,
            verdict_validator TEXT,
            verdict_at REAL,
            verdict_overdue_at REAL,
            fetched TEXT
        )
        """,
        f"INSERT INTO transactions_v7 ({_TX_COLUMNS_V6}) "  # noqa: S608
        f"SELECT {_TX_COLUMNS_V6} FROM transactions",
        "DROP TABLE transactions",
        "ALTER TABLE transactions_v7 RENAME TO transactions",
        """
        CREATE UNIQUE INDEX transactions_live_round ON transactions(round_id, miner)
        WHERE state NOT IN ('failed', 'rolled_back')
        """,
        """
        CREATE INDEX transactions_unfinished ON transactions(state)
        WHERE state NOT IN ('committed', 'failed', 'rolled_back')
        """,
        "CREATE INDEX transactions_finished ON transactions(finished_at)",
        "CREATE INDEX transactions_cid ON transactions(cid) WHERE cid IS NOT NULL",
        """
        CREATE INDEX transactions_awaiting_verdict ON transactions(finished_at)
        WHERE state = 'committed' AND verdict IS NULL
        """,
        "CREATE INDEX transactions_verdicts ON transactions(verdict_at) WHERE verdict IS NOT NULL",
    ),
)

REBUILDS = frozenset({7})
"""Migrations that rebuild a table other tables reference: `migrate` runs them with foreign
keys off (a DROP would otherwise cascade its checks) and checks every reference before
committing."""

SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection, *, target: int = SCHEMA_VERSION) -> int:
    """Apply the missing migrations up to `target`; each in its own transaction."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise ValidationError(
            f"journal schema version {version} is newer than this program supports "
            f"(1..{SCHEMA_VERSION}); refusing to open it"
        )
    for number in range(version + 1, target + 1):
        if number in REBUILDS:
            _rebuild(conn, number)
        else:
            _apply(conn, number)
    return target


def _apply(conn: sqlite3.Connection, number: int, *, check_references: bool = False) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statement in MIGRATIONS[number - 1]:
            conn.execute(statement)
        if check_references:
            broken = conn.execute("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise ValidationError(
                    f"journal migration {number} would break {len(broken)} references "
                    f"(first: {tuple(broken[0])}); the journal is left at version {number - 1}"
                )
        conn.execute(f"PRAGMA user_version = {number}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _rebuild(conn: sqlite3.Connection, number: int) -> None:
    """`PRAGMA foreign_keys` is a no-op inside a transaction: switch it off before BEGIN and
    back to what it was after COMMIT or ROLLBACK, whatever happened."""
    enabled = int(conn.execute("PRAGMA foreign_keys").fetchone()[0])
    conn.execute("PRAGMA foreign_keys = OFF")
    try:
        _apply(conn, number, check_references=True)
    finally:
        conn.execute(f"PRAGMA foreign_keys = {'ON' if enabled else 'OFF'}")


def connect(path: Path, *, synchronous: str = "FULL") -> sqlite3.Connection:
    """Open (creating) a journal file with our pragmas; autocommit, explicit BEGINs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=True)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA busy_timeout = 5000")
    return conn
