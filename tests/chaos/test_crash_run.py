"""The crash run's journal reads between kills: a miner killed in its first start may leave
a journal file without tables, which is "nothing unfinished", not an unreadable journal."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from bench.chaos.crash_run import _recovered, _unfinished


def test_a_journal_without_tables_has_nothing_unfinished(tmp_path: Path) -> None:
    journal = tmp_path / "journal.sqlite"
    sqlite3.connect(journal).close()  # created, schema never committed
    assert _unfinished(journal) == {}


def test_unfinished_and_recovered_read_states_and_update_times(tmp_path: Path) -> None:
    journal = tmp_path / "journal.sqlite"
    conn = sqlite3.connect(journal)
    conn.execute("CREATE TABLE transactions (id TEXT, state TEXT, updated_at REAL)")
    conn.executemany(
        "INSERT INTO transactions VALUES (?, ?, ?)",
        [("a", "training", 1.0), ("b", "committed", 2.0), ("c", "blockchain_submit", 3.0)],
    )
    conn.commit()
    before = _unfinished(journal)
    assert before == {"a": ("training", 1.0), "c": ("blockchain_submit", 3.0)}
    assert not _recovered(journal, before)
    conn.execute("UPDATE transactions SET state = 'ipfs_upload', updated_at = 4 WHERE id = 'a'")
    conn.commit()
    assert not _recovered(journal, before)  # c has not moved yet
    conn.execute("UPDATE transactions SET state = 'committed', updated_at = 5 WHERE id = 'c'")
    conn.commit()
    conn.close()
    assert _recovered(journal, before)
