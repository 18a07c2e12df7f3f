"""Journal health: sqlite's own check plus the saga's invariants.

Each invariant is one SQL query returning offending transaction ids, so a failure names
exactly what is wrong (for the GUI's diagnostics page and the crash test).

The full check reads every page (about 2 s for 100,000 transactions), so start-up runs the
scoped check instead: the invariants over unfinished transactions and the most recent
ones, which are the rows a crash can have left half-written. The full check stays one call
away (diagnostics, the CLI's verify command).
"""

from __future__ import annotations

import sqlite3

_INVARIANTS: tuple[tuple[str, str], ...] = (
    (
        "terminal transaction without finished_at (or unfinished one with it)",
        "SELECT id FROM {tx} WHERE "
        "(state IN ('committed','failed','rolled_back')) != (finished_at IS NOT NULL)",
    ),
    (
        "committed transaction without CID or signed submission",
        "SELECT id FROM {tx} WHERE state = 'committed' AND "
        "(cid IS NULL OR tx_hash IS NULL OR signed_raw IS NULL)",
    ),
    (
        "transaction past upload without a gradient hash",
        "SELECT id FROM {tx} WHERE state IN ('ipfs_upload','blockchain_submit',"
        "'task_complete','committed') AND gradient_hash IS NULL",
    ),
    (
        "transaction at or past submit without a CID",
        "SELECT id FROM {tx} WHERE state IN ('blockchain_submit','task_complete',"
        "'committed') AND cid IS NULL",
    ),
    (
        "signed transaction without its (round, miner) submission claim",
        "SELECT t.id FROM {tx} t WHERE t.signed_raw IS NOT NULL AND NOT EXISTS "
        "(SELECT 1 FROM submissions s WHERE s.round_id = t.round_id AND s.miner = t.miner "
        "AND s.transaction_id = t.id AND s.tx_hash = t.tx_hash)",
    ),
    (
        "submission claim pointing at no transaction",
        "SELECT s.transaction_id FROM {subs} s LEFT JOIN transactions t "
        "ON t.id = s.transaction_id WHERE t.id IS NULL",
    ),
    (
        "rolled back transaction with an undo still pending",
        "SELECT DISTINCT t.id FROM {tx} t JOIN compensations c "
        "ON c.transaction_id = t.id WHERE t.state = 'rolled_back' AND c.status = 'pending'",
    ),
    (
        "compensating transaction with no pending undo",
        "SELECT t.id FROM {tx} t WHERE t.state = 'compensating' AND NOT EXISTS "
        "(SELECT 1 FROM compensations c WHERE c.transaction_id = t.id "
        "AND c.status = 'pending')",
    ),
    (
        "transaction uploading or submitting without its gradient (row or file)",
        "SELECT t.id FROM {tx} t WHERE t.state IN ('ipfs_upload','blockchain_submit') "
        "AND t.gradient_path IS NULL AND NOT EXISTS "
        "(SELECT 1 FROM gradients g WHERE g.transaction_id = t.id)",
    ),
    (
        "gradient row kept for a committed transaction, or an undone one without an open "
        "dead letter",
        "SELECT g.transaction_id FROM gradients g JOIN {tx} t ON t.id = g.transaction_id "
        "WHERE t.state = 'committed' OR (t.state IN ('failed','rolled_back') AND NOT EXISTS "
        "(SELECT 1 FROM dead_letters d WHERE d.transaction_id = t.id AND d.status = 'open'))",
    ),
    (
        "verdict on a transaction that is not committed, or credits it did not earn",
        "SELECT id FROM {tx} WHERE verdict IS NOT NULL AND (state != 'committed' OR "
        "verdict_at IS NULL OR (verdict = 'rejected' AND credits != 0))",
    ),
    (
        "pending task completion for a transaction that is not committed",
        "SELECT o.transaction_id FROM outbox o JOIN {tx} t ON t.id = o.transaction_id "
        "WHERE o.done_at IS NULL AND t.state NOT IN ('task_complete','committed')",
    ),
)


# Constant SQL fragments (no outside input): the rows start-up checks.
_SCOPED = (
    "(SELECT * FROM transactions WHERE state NOT IN ('committed', 'failed', 'rolled_back') "
    "UNION SELECT * FROM (SELECT * FROM transactions ORDER BY rowid DESC LIMIT 1000))"
)
_SCOPED_SUBMISSIONS = "(SELECT * FROM submissions ORDER BY rowid DESC LIMIT 1000)"


def check_integrity(conn: sqlite3.Connection, *, full: bool = True) -> list[str]:
    """Return human-readable problems; empty when sqlite and every invariant are happy.

    `full=False`: only the invariants, over unfinished and the 1000 latest transactions.
    """
    problems: list[str] = []
    if full:
        problems.extend(
            f"sqlite: {row[0]}" for row in conn.execute("PRAGMA integrity_check") if row[0] != "ok"
        )
        problems.extend(
            f"foreign key: {row[0]} row {row[1]} -> {row[2]}"
            for row in conn.execute("PRAGMA foreign_key_check")
        )
    tx = "transactions" if full else _SCOPED
    subs = "submissions" if full else _SCOPED_SUBMISSIONS
    for description, sql in _INVARIANTS:
        ids = [str(row[0]) for row in conn.execute(sql.format(tx=tx, subs=subs)).fetchmany(20)]
        if ids:
            problems.append(f"{description}: {', '.join(ids)}")
    return problems
