"""Group commit: the journal's write path, one sqlite transaction for all queued writes.

Why it looks like this:
- Writes queued while a batch is in flight go into the next batch, so concurrent sagas
  share one commit (and one WAL fsync). Every caller still awaits the commit that holds
  its write.
- A write may carry an artifact (the gradient file) that must be durable before the record
  naming it can be: the batch writes all its artifacts, fsyncs each once and each
  directory once, and only then commits. A write may also name files to delete once it
  is committed (the gradient of a committed round); that happens off the journal thread,
  since an unlink can wait behind the file system's journal commit.
- Only writes marked `durable` need the commit on disk before the caller goes on (intent
  records, terminal states). A batch with none of them commits with synchronous=NORMAL;
  a WAL commit still survives a process kill, and the next durable commit's WAL fsync makes
  it durable too (see docs/coordinator.md, "What is fsynced, and why").
- Optimistic: no SAVEPOINT per write; if one write raises, the batch is rolled back and
  replayed with a SAVEPOINT around each write, so it fails alone. Writes are pure
  functions of the connection, so replaying them is safe.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from r3mes_desktop.core import artifacts

log = logging.getLogger(__name__)

WriteFn = Callable[[sqlite3.Connection], Any]


@dataclass(frozen=True)
class Write:
    fn: WriteFn
    durable: bool = True
    artifact: tuple[Path, bytes] | None = None  # durable on disk before the commit
    remove_after: tuple[Path, ...] = ()  # deleted once the commit is done
    read: bool = False  # a query: run after the batch's commit, outside any transaction


@dataclass
class BatchStats:
    """What the write path did, for the benchmark's accounting."""

    batches: int = 0
    writes: int = 0
    fsynced_commits: int = 0  # commits made with the durable mode (FULL/EXTRA)
    artifacts: int = 0
    removed: int = 0


class GroupCommitter:
    def __init__(
        self,
        *,
        executor: Callable[[], Executor],
        conn: Callable[[], sqlite3.Connection],
        synchronous: str,
    ) -> None:
        self._executor = executor
        self._conn = conn
        self._durable_mode = synchronous
        self._mode: str | None = None  # what the connection is set to now (None: unknown)
        self._queue: list[tuple[Write, asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._removals: set[asyncio.Future[None]] = set()
        self.stats = BatchStats()

    def connected(self, synchronous: str) -> None:
        """A (re)opened connection starts in the journal's configured mode."""
        self._mode = synchronous

    async def submit(self, write: Write) -> Any:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((write, fut))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush())
        return await fut

    async def drain(self) -> None:
        """Wait for the queued writes and the deletions they asked for."""
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        while self._removals:
            await asyncio.gather(*self._removals, return_exceptions=True)

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                results = await loop.run_in_executor(
                    self._executor(), self.run_batch, [w for w, _ in batch]
                )
                removals = [
                    path
                    for (write, _), (ok, _) in zip(batch, results, strict=True)
                    if ok
                    for path in write.remove_after
                ]
                if removals:  # committed: delete on the default executor, not this thread
                    removal = loop.run_in_executor(None, self._remove_all, removals)
                    self._removals.add(removal)
                    removal.add_done_callback(self._removals.discard)
            except BaseException as exc:
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
                continue
            for (_, fut), (ok, value) in zip(batch, results, strict=True):
                if fut.done():
                    continue
                if ok:
                    fut.set_result(value)
                else:
                    fut.set_exception(value)

    # -- on the journal thread ----------------------------------------------------------
    def run_batch(self, writes: list[Write]) -> list[tuple[bool, Any]]:
        """Artifacts, then one transaction for the writes, then the queued reads (which so
        see every write queued before them)."""
        results: dict[int, tuple[bool, Any]] = {}
        files = [(i, w.artifact) for i, w in enumerate(writes) if w.artifact is not None]
        if files:
            errors = artifacts.write_durable_many_sync([artifact for _, artifact in files])
            results.update((i, (False, e)) for (i, _), e in zip(files, errors, strict=True) if e)
            self.stats.artifacts += len(files)
        todo = [i for i, w in enumerate(writes) if not w.read and i not in results]
        if todo:
            durable = any(writes[i].durable for i in todo)
            done = self._transaction([writes[i].fn for i in todo], durable=durable)
            results.update(zip(todo, done, strict=True))
            self.stats.batches += 1
            self.stats.writes += len(todo)
            self.stats.fsynced_commits += durable and self._durable_mode != "NORMAL"
        conn = self._conn()
        for i, write in enumerate(writes):
            if write.read:
                try:
                    results[i] = (True, write.fn(conn))
                except Exception as exc:
                    results[i] = (False, exc)
        return [results[i] for i in range(len(writes))]

    def _remove_all(self, paths: list[Path]) -> None:
        for path in paths:
            try:
                artifacts.remove_sync(path)
            except OSError as exc:  # committed already: a leftover file is only disk space
                log.warning("could not delete %s after its commit: %s", path.name, exc)
            else:
                self.stats.removed += 1

    def _set_mode(self, conn: sqlite3.Connection, mode: str) -> None:
        if self._mode != mode:
            conn.execute(f"PRAGMA synchronous = {mode}")
            self._mode = mode

    def _transaction(self, fns: list[WriteFn], *, durable: bool) -> list[tuple[bool, Any]]:
        conn = self._conn()
        # Between transactions only: the mode applies to the next COMMIT.
        self._set_mode(conn, self._durable_mode if durable else "NORMAL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            results: list[tuple[bool, Any]] = [(True, fn(conn)) for fn in fns]
        except Exception as exc:
            conn.execute("ROLLBACK")
            if len(fns) == 1:
                return [(False, exc)]
            return self._isolated(conn, fns)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._commit(conn)
        return results

    def _isolated(self, conn: sqlite3.Connection, fns: list[WriteFn]) -> list[tuple[bool, Any]]:
        results: list[tuple[bool, Any]] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for fn in fns:
                conn.execute("SAVEPOINT write")
                try:
                    value = fn(conn)
                except Exception as exc:
                    conn.execute("ROLLBACK TO write")
                    conn.execute("RELEASE write")
                    results.append((False, exc))
                else:
                    conn.execute("RELEASE write")
                    results.append((True, value))
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._commit(conn)
        return results

    @staticmethod
    def _commit(conn: sqlite3.Connection) -> None:
        try:
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
