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
- Rows many writes add (history) are `Deferred`: inserted together just before the commit
  (per write, inside its SAVEPOINT, when replaying), so a batch pays one statement for
  them, not one per write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from r3mes_desktop.core import artifacts

log = logging.getLogger(__name__)


def _nothing() -> None:
    """Queued behind the deletions: when it has run, so have they."""


def _fail(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


WriteFn = Callable[[sqlite3.Connection], Any]


class Deferred(Protocol):
    """Rows the writes hand over instead of inserting one statement each (history rows):
    written together before the commit, or dropped with the writes that made them."""

    def flush(self, conn: sqlite3.Connection) -> None: ...
    def discard(self) -> None: ...


@dataclass(frozen=True)
class Write:
    fn: WriteFn
    durable: bool = True
    artifact: tuple[Path, bytes] | None = None  # durable on disk before the commit
    remove_after: Sequence[Path] = ()  # deleted once the commit is done (read after it)
    read: bool = False  # a query: run after the batch's commit, outside any transaction


@dataclass
class BatchStats:
    """What the write path did, for the benchmark's accounting."""

    batches: int = 0
    writes: int = 0
    fsynced_commits: int = 0  # commits made with the durable mode (FULL/EXTRA)
    artifacts: int = 0
    removed: int = 0


Item = tuple[Write, "asyncio.Future[Any]"]


class GroupCommitter:
    """Batches writes for the journal thread (see the module doc).

    The journal thread drives the batches: when one is committed it hands the results to
    the loop (one `call_soon_threadsafe`) and takes what queued meanwhile as the next
    batch at once, without waiting for the loop to wake up. One batch per executor job,
    so the journal's other calls (queries, maintenance) queued on the same thread run in
    between. Deletions go to their own thread and never wake the loop; `drain` waits for
    them with a no-op queued behind them (that thread runs its work in order)."""

    def __init__(
        self,
        *,
        executor: Callable[[], Executor],
        remover: Callable[[], Executor],
        conn: Callable[[], sqlite3.Connection],
        synchronous: str,
        deferred: Deferred | None = None,
    ) -> None:
        self._executor = executor
        self._deferred = deferred
        self._remover = remover
        self._conn = conn
        self._durable_mode = synchronous
        self._mode: str | None = None  # what the connection is set to now (None: unknown)
        self._lock = threading.Lock()  # guards _queue and _running (loop + journal thread)
        self._queue: list[Item] = []
        self._running = False  # a batch job is queued or running on the journal thread
        self._start_loop: asyncio.AbstractEventLoop | None = None  # a start is pending there
        self._idle: list[asyncio.Future[None]] = []  # drain() calls waiting for no batch
        self._removing = False  # deletions were queued since the last drain
        self.stats = BatchStats()

    def connected(self, synchronous: str) -> None:
        """A (re)opened connection starts in the journal's configured mode."""
        self._mode = synchronous

    async def submit(self, write: Write) -> Any:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        with self._lock:
            self._queue.append((write, fut))
            # a start left pending on a loop that closed before running it would hold
            # every later write: start again
            stale = self._start_loop is not None and self._start_loop.is_closed()
            start, self._running = not self._running or stale, True
        if start:  # on the next turn of the loop: writes queued in this turn join the batch
            self._start_loop = loop
            loop.call_soon(self._start)
        return await fut

    def _busy(self) -> bool:
        with self._lock:
            return self._running or bool(self._queue)

    async def drain(self) -> None:
        """Wait for the queued writes and the deletions they asked for."""
        loop = asyncio.get_running_loop()
        while self._busy():
            waiter: asyncio.Future[None] = loop.create_future()
            self._idle.append(waiter)
            await waiter
        if self._removing:
            self._removing = False
            await loop.run_in_executor(self._remover(), _nothing)

    def _start(self) -> None:
        """Queue a batch job on the journal thread (from the loop or the journal thread)."""
        self._start_loop = None
        try:
            self._executor().submit(self._run_one)
        except BaseException as exc:  # the journal is closed: fail what is queued
            with self._lock:
                batch, self._queue = self._queue, []
                self._running = False
            for _, fut in batch:
                with contextlib.suppress(RuntimeError):
                    fut.get_loop().call_soon_threadsafe(_fail, fut, exc)
            if not isinstance(exc, Exception):
                raise

    def _run_one(self) -> None:
        """On the journal thread: take the queued writes, commit them, hand the results
        back, and queue the next job if more writes came in meanwhile."""
        with self._lock:
            batch, self._queue = self._queue, []
        outcome: list[tuple[bool, Any]] | BaseException = []
        if batch:
            try:
                outcome = self.run_batch([write for write, _ in batch])
            except BaseException as exc:
                outcome = exc
            if isinstance(outcome, list):
                self._remove_committed(batch, outcome)
        with self._lock:
            more = bool(self._queue)
            self._running = more
        if batch:
            loop = batch[0][1].get_loop()
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(self._hand_back, batch, outcome)
        elif not more:
            for waiter in list(self._idle):
                with contextlib.suppress(RuntimeError):
                    waiter.get_loop().call_soon_threadsafe(self._wake_idle)
        if more:
            self._start()

    def _remove_committed(self, batch: list[Item], outcome: list[tuple[bool, Any]]) -> None:
        removals = [
            path
            for (write, _), (ok, _) in zip(batch, outcome, strict=True)
            if ok
            for path in write.remove_after
        ]
        if removals:  # committed: delete on the remover thread, not this one
            try:
                self._remover().submit(self._remove_all, removals)
                self._removing = True
            except RuntimeError as exc:  # closing: a leftover file is only disk space
                log.warning("could not queue %d deletions: %s", len(removals), exc)

    def _hand_back(
        self, batch: list[Item], outcome: list[tuple[bool, Any]] | BaseException
    ) -> None:
        """On the loop: resolve the batch's futures."""
        if isinstance(outcome, BaseException):
            for _, fut in batch:
                _fail(fut, outcome)
        else:
            for (_, fut), (ok, value) in zip(batch, outcome, strict=True):
                if fut.done():
                    continue
                if ok:
                    fut.set_result(value)
                else:
                    fut.set_exception(value)
        self._wake_idle()

    def _wake_idle(self) -> None:
        if not self._idle or self._busy():
            return
        idle, self._idle = self._idle, []
        for waiter in idle:
            if not waiter.done():
                waiter.set_result(None)

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
            self._flush(conn)
        except Exception as exc:
            self._discard()
            conn.execute("ROLLBACK")
            if len(fns) == 1:
                return [(False, exc)]
            return self._isolated(conn, fns)
        except BaseException:
            self._abort(conn)
            raise
        self._commit(conn)
        return results

    def _flush(self, conn: sqlite3.Connection) -> None:
        if self._deferred is not None:
            self._deferred.flush(conn)

    def _discard(self) -> None:
        if self._deferred is not None:
            self._deferred.discard()

    def _abort(self, conn: sqlite3.Connection) -> None:
        """Forget the deferred rows and roll back whatever is open (a cancel, a crash)."""
        self._discard()
        if conn.in_transaction:
            conn.execute("ROLLBACK")

    def _isolated(self, conn: sqlite3.Connection, fns: list[WriteFn]) -> list[tuple[bool, Any]]:
        results: list[tuple[bool, Any]] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for fn in fns:
                conn.execute("SAVEPOINT write")
                try:
                    value = fn(conn)
                    self._flush(conn)
                except Exception as exc:
                    self._discard()
                    conn.execute("ROLLBACK TO write")
                    conn.execute("RELEASE write")
                    results.append((False, exc))
                else:
                    conn.execute("RELEASE write")
                    results.append((True, value))
        except BaseException:
            self._abort(conn)
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
