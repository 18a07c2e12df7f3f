"""The SQLite journal a network role keeps (the validator's verdicts, the aggregator's
versions): WAL, `synchronous=FULL` so a committed row survives power loss, and every write
one short immediate transaction, because each row is the intent that must be durable
before the role signs or sends anything. Its calls block (each write waits for an fsync):
a role running on an event loop calls them in a thread (`asyncio.to_thread`)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any


class RoleJournal:
    def __init__(self, path: Path, schema: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(schema)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    def _write(self, sql: str, args: tuple[Any, ...]) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(sql, args)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        with self._lock:
            return list(self._db.execute(sql, args).fetchall())
