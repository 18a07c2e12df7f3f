"""`Journal`: the async face of the one sqlite connection that holds every transaction.

Why it looks like this:
- WAL + `synchronous=FULL`: a commit is on disk before `apply` returns, so "journaled
  before the effect" holds even across power loss, not only process kills.
- One connection, used only from a single-worker executor: sqlite never blocks the asyncio
  loop and writes are naturally serialised (no "database is locked").
- One way in for writes (`_write`: the next group commit) and one for reads (`run`: served
  by that same batch after its commit), so a read always sees the writes queued before it.
- A gradient up to `inline_gradient_max` bytes (256 KiB: the tiny and default presets) is a
  row of the `gradients` table, written by the commit that names it; a bigger one is a file
  made durable before that commit. SQLite's own measurements ("Internal Versus External
  BLOBs") find small blobs faster inside the database, and here each file cost an fsync of
  its own plus one of its directory: most of a round's disk time (docs/coordinator.md).
- Secrets never enter: the signed raw transaction is public data; keys are never passed in.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from r3mes_desktop.core import artifacts
from r3mes_desktop.core.errors import IntegrityError, ValidationError
from r3mes_desktop.core.journal import earnings, lifecycle, queries
from r3mes_desktop.core.journal import model_versions as versions_table
from r3mes_desktop.core.journal.batch import BatchStats, GroupCommitter, Write
from r3mes_desktop.core.journal.change import (
    INLINE_GRADIENT_MAX,
    Change,
    apply_in_txn,
    create_in_txn,
)
from r3mes_desktop.core.journal.integrity import check_integrity
from r3mes_desktop.core.journal.rows import HistoryRows, history_in
from r3mes_desktop.core.journal.schema import connect, migrate
from r3mes_desktop.core.records import (
    CompensationRow,
    DeadLetter,
    HistoryEntry,
    ModelVersion,
    OutboxRow,
    TransactionRecord,
    TransactionStatus,
)
from r3mes_desktop.core.steps import RoundSpec
from r3mes_desktop.core.txstate import TxState

T = TypeVar("T")


class Journal:
    """Async facade over one sqlite connection owned by one worker thread."""

    def __init__(
        self,
        path: Path | str,
        *,
        synchronous: str = "FULL",
        inline_gradient_max: int = INLINE_GRADIENT_MAX,
    ) -> None:
        if synchronous not in ("FULL", "NORMAL", "EXTRA"):
            raise ValidationError(
                f"journal synchronous must be FULL, EXTRA or NORMAL, got {synchronous!r}"
            )
        if inline_gradient_max < 0:
            raise ValidationError(f"inline_gradient_max = {inline_gradient_max}: accepted >= 0")
        self.path = Path(path)
        self.inline_gradient_max = inline_gradient_max
        self._synchronous = synchronous
        self._executor: ThreadPoolExecutor | None = None
        self._remover: ThreadPoolExecutor | None = None  # deletes committed rounds' files
        self._conn: sqlite3.Connection | None = None
        self._history = HistoryRows()
        self._writer = GroupCommitter(
            executor=self._the_executor,
            remover=self._the_remover,
            conn=self._db,
            synchronous=synchronous,
            deferred=self._history,
        )

    # -- lifecycle -----------------------------------------------------------------------
    async def open(self) -> None:
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal")
        self._remover = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal-rm")
        await self._on_thread(self._open_sync)

    def _open_sync(self) -> None:
        try:
            self._conn = connect(self.path, synchronous=self._synchronous)
            self._writer.connected(self._synchronous)
            migrate(self._conn)
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError):  # locked, busy, I/O: not damage
                raise
            self._close_sync()
            raise IntegrityError(
                f"journal {self.path}: {exc}; the file is damaged or is not a journal. Move it "
                "aside (keep it for a bug report) and start again to begin a new journal"
            ) from exc

    async def close(self) -> None:
        if self._executor is None:
            return
        await self._writer.drain()
        await self._on_thread(self._close_sync)
        for executor in (self._executor, self._remover):
            if executor is not None:
                executor.shutdown(wait=True)
        self._executor = self._remover = None

    def _close_sync(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _the_executor(self) -> ThreadPoolExecutor:
        if self._executor is None:
            raise RuntimeError("journal is not open")
        return self._executor

    def _the_remover(self) -> ThreadPoolExecutor:
        if self._remover is None:
            raise RuntimeError("journal is not open")
        return self._remover

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("journal is not open")
        return self._conn

    async def _on_thread(self, fn: Callable[[], None]) -> None:
        """Opening and closing the connection: before and after the group commit runs."""
        await asyncio.get_running_loop().run_in_executor(self._the_executor(), fn)

    # -- the two ways in -----------------------------------------------------------------
    async def _write(
        self,
        fn: Callable[[sqlite3.Connection], T],
        *,
        durable: bool = True,
        artifact: tuple[Path, bytes] | None = None,
        remove_after: Sequence[Path] = (),
    ) -> T:
        """Run `fn(conn)` in the next group commit; returns once that commit is done.

        `durable`: the commit is on disk (synchronous=FULL) before this returns; for intent
        records and terminal states. `artifact` is made durable before the commit,
        `remove_after` deleted after it (see batch)."""
        self._the_executor()
        result: T = await self._writer.submit(
            Write(fn, durable=durable, artifact=artifact, remove_after=remove_after)
        )
        return result

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """The one read path: `fn(conn)` served by the group commit's next batch, after its
        commit (one trip to the journal thread shared with the writes queued beside it)."""
        self._the_executor()
        result: T = await self._writer.submit(Write(fn, read=True))
        return result

    async def settle(self) -> None:
        """Wait until queued writes are committed and the files they release are deleted."""
        await self._writer.drain()

    @property
    def write_stats(self) -> BatchStats:
        return self._writer.stats

    # -- writes --------------------------------------------------------------------------
    async def create(
        self,
        *,
        tx_id: str,
        spec: RoundSpec,
        miner: str,
        now: float,
        deadline: float | None,
        start: TxState = TxState.PENDING,
    ) -> TransactionRecord:
        """Insert a new transaction (see `change.create_in_txn`)."""
        return await self._write(
            lambda conn: create_in_txn(
                conn,
                self._history,
                tx_id=tx_id,
                spec=spec,
                miner=miner,
                now=now,
                deadline=deadline,
                start=start,
            )
        )

    async def apply(self, change: Change) -> TransactionRecord:
        """Apply `change` in one sqlite transaction and return the updated record.

        A small gradient (`artifact`) becomes a row of this transaction (its record then
        has no `gradient_path`); a big one a durable file written before the commit. The
        gradient is released when nobody will read it again, and committing a round
        closes the dead letters of that round (`lifecycle`), in the same commit."""
        inline: bytes | None = None
        if change.artifact is not None and len(change.artifact[1]) <= self.inline_gradient_max:
            inline = change.artifact[1]
            change = dataclasses.replace(
                change, artifact=None, fields={**change.fields, "gradient_path": None}
            )
        removals = list(change.remove_after)  # the commit may add the gradient's file

        def write(conn: sqlite3.Connection) -> TransactionRecord:
            after = apply_in_txn(conn, self._history, change)
            if inline is not None:
                conn.execute(
                    "INSERT OR REPLACE INTO gradients (transaction_id, data) VALUES (?, ?)",
                    (change.tx_id, inline),
                )
            lifecycle.release_gradient_if_unneeded(conn, after, removals)
            if after.state is TxState.COMMITTED:
                lifecycle.supersede_letters(
                    conn, self._history, removals, now=change.now, committed=after
                )
            return after

        return await self._write(
            write, durable=change.durable, artifact=change.artifact, remove_after=removals
        )

    async def supersede_settled_letters(self, *, now: float) -> int:
        """Close every open dead letter whose round another transaction has committed (a
        journal written before letters closed themselves at the commit)."""
        removals: list[Path] = []
        closed: int = await self._write(
            lambda conn: lifecycle.supersede_letters(conn, self._history, removals, now=now),
            remove_after=removals,
        )
        return closed

    async def append_history(self, entries: list[HistoryEntry]) -> None:
        """Record retries, notes and compensation attempts that change no state.

        Not durable: no effect waits on these rows; the next durable commit carries them."""
        await self._write(lambda conn: self._history.add(entries), durable=False)

    async def compensation_failed(
        self, comp_id: int, *, now: float, next_at: float, error: str, entry: HistoryEntry
    ) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE compensations SET attempts = attempts + 1, last_error = ?, "
                "next_attempt_at = ?, updated_at = ? WHERE id = ?",
                (error, next_at, now, comp_id),
            )
            self._history.add([entry])

        await self._write(write, durable=False)  # a lost row only means an earlier retry

    async def resolve_dead_letter(self, dl_id: str, *, status: str, now: float) -> None:
        """Close a dead letter; the last one of an undone transaction takes its gradient."""
        removals: list[Path] = []

        def write(conn: sqlite3.Connection) -> None:
            row = conn.execute(
                "UPDATE dead_letters SET status = ?, resolved_at = ? WHERE id = ? "
                "RETURNING transaction_id",
                (status, now, dl_id),
            ).fetchone()
            rec = None if row is None else queries.get(conn, row[0])
            if rec is not None:
                lifecycle.release_gradient_if_unneeded(conn, rec, removals)

        await self._write(write, remove_after=removals)

    # -- verdicts (read from chain: updates of committed transactions, see `earnings`) ----
    async def record_verdict(
        self,
        tx_id: str,
        *,
        verdict: str,
        reason: int,
        credits: int,
        block: int,
        validator: str,
        now: float,
        note: str,
    ) -> TransactionRecord | None:
        """Journal a verdict on a committed transaction that has none (None: it had one).

        Not durable: a verdict lost to a power cut is read from the chain again."""
        return await self._write(
            lambda conn: earnings.record_verdict(
                conn,
                self._history,
                tx_id=tx_id,
                verdict=verdict,
                reason=reason,
                credits=credits,
                block=block,
                validator=validator,
                now=now,
                note=note,
            ),
            durable=False,
        )

    async def mark_verdicts_overdue(
        self, tx_ids: Sequence[str], *, now: float, note: str
    ) -> list[TransactionRecord]:
        """Flag transactions overdue for a verdict, each once ever; returns those flagged
        now. Durable: the notice that follows must not be sent twice."""
        if not tx_ids:
            return []
        ids = list(tx_ids)
        return await self._write(
            lambda conn: earnings.mark_overdue(conn, self._history, tx_ids=ids, now=now, note=note)
        )

    async def awaiting_verdicts(self, *, limit: int = 500) -> list[TransactionRecord]:
        return await self.run(functools.partial(earnings.awaiting, limit=limit))

    async def credits_series(self, *, limit: int = 500) -> list[tuple[float, int]]:
        return await self.run(functools.partial(earnings.credits_series, limit=limit))

    # -- the network model's versions (read from chain, see `model_versions`) -----------
    async def record_model_versions(self, versions: Sequence[ModelVersion]) -> list[ModelVersion]:
        """Journal the versions not journaled yet; returns those, in id order. Not durable:
        a version lost to a power cut is read from the chain again."""
        if not versions:
            return []
        given = list(versions)
        return await self._write(lambda conn: versions_table.record(conn, given), durable=False)

    async def forget_model_versions(self) -> int:
        """Drop every journaled version (the chain holds other ones); returns how many."""
        forgotten: int = await self._write(versions_table.forget, durable=False)
        return forgotten

    async def model_version_ids(self) -> set[int]:
        return await self.run(versions_table.known_ids)

    async def newest_model_version(self) -> ModelVersion | None:
        return await self.run(versions_table.newest)

    async def model_versions(self, *, limit: int = 500) -> list[ModelVersion]:
        """The newest `limit` versions, oldest first."""
        return await self.run(functools.partial(versions_table.series, limit=limit))

    async def model_versions_by_id(self, ids: Iterable[int]) -> dict[int, ModelVersion]:
        wanted = list(ids)
        return await self.run(functools.partial(versions_table.by_id, ids=wanted))

    async def statuses(
        self,
        records: Sequence[TransactionRecord],
        *,
        now: float,
        history: list[HistoryEntry] | None = None,
    ) -> list[TransactionStatus]:
        """The records as the GUI, CLI and API show them, each with its update's fate (see
        `TransactionStatus.of`): the versions built on the ones they trained on are read in
        one trip for all of them, and only for those with a final verdict."""
        finals = {r.spec.model_version + 1 for r in records if r.verdict is not None}
        successors = await self.model_versions_by_id(finals) if finals else {}
        return [
            TransactionStatus.of(
                r,
                now=now,
                history=history or [],
                successor=successors.get(r.spec.model_version + 1),
            )
            for r in records
        ]

    # -- reads ---------------------------------------------------------------------------
    async def get(self, tx_id: str) -> TransactionRecord | None:
        return await self.run(functools.partial(queries.get, tx_id=tx_id))

    async def snapshot(self, tx_id: str) -> tuple[TransactionRecord | None, list[HistoryEntry]]:
        """The record and its history, read together (one trip to the journal thread)."""
        return await self.run(functools.partial(queries.snapshot, tx_id=tx_id))

    async def history(self, tx_id: str) -> list[HistoryEntry]:
        return await self.run(functools.partial(history_in, tx_id=tx_id))

    async def list_transactions(
        self, *, states: Iterable[TxState] | None = None, limit: int = 200
    ) -> list[TransactionRecord]:
        wanted = None if states is None else [TxState(s).value for s in states]
        return await self.run(functools.partial(queries.transactions, states=wanted, limit=limit))

    async def unfinished(self) -> list[TransactionRecord]:
        return await self.run(queries.unfinished)

    async def gradient_holders(self) -> set[str]:
        return await self.run(queries.gradient_holders)

    async def cid_needed_by(self, cid: str, *, other_than: str) -> tuple[str, TxState] | None:
        return await self.run(
            functools.partial(queries.cid_needed_by, cid=cid, other_than=other_than)
        )

    async def submission_owner(self, round_id: int, miner: str) -> str | None:
        return await self.run(
            functools.partial(queries.submission_owner, round_id=round_id, miner=miner)
        )

    async def submitted_rounds(self, miner: str) -> set[int]:
        return await self.run(functools.partial(queries.submitted_rounds, miner=miner))

    async def compensations(
        self, *, tx_id: str | None = None, due_before: float | None = None
    ) -> list[CompensationRow]:
        return await self.run(
            functools.partial(queries.compensations, tx_id=tx_id, due_before=due_before)
        )

    async def outbox(self, *, due_before: float | None = None) -> list[OutboxRow]:
        return await self.run(functools.partial(queries.outbox, due_before=due_before))

    async def dead_letters(
        self, *, status: str | None = "open", dl_id: str | None = None
    ) -> list[DeadLetter]:
        return await self.run(functools.partial(queries.dead_letters, status=status, dl_id=dl_id))

    async def integrity_check(self, *, full: bool = True) -> list[str]:
        """`PRAGMA integrity_check` plus our invariants; an empty list means healthy.

        `full=False` checks only the invariants of unfinished and recent transactions
        (what start-up runs: milliseconds instead of seconds on a big journal)."""
        return await self.run(functools.partial(check_integrity, full=full))

    # -- the journaled gradient (a row of `gradients`, or the file `gradient_path`) --------
    async def gradient(self, rec: TransactionRecord) -> bytes:
        """The gradient `rec` journaled, checked against its hash; IntegrityError when it
        is gone or not what the journal says."""
        if rec.gradient_hash is None:
            raise IntegrityError(f"transaction {rec.id} has no journaled gradient")
        expected = rec.gradient_hash
        data = await self.stored_gradient(rec)
        if data is None:
            where = f"file {Path(rec.gradient_path).name}" if rec.gradient_path else "row"
            raise IntegrityError(f"gradient {where} of {rec.id} is missing")
        if await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest()) != expected:
            raise IntegrityError(f"gradient of {rec.id} does not match its journaled hash")
        return data

    async def stored_gradient(self, rec: TransactionRecord) -> bytes | None:
        """The stored gradient bytes as they are (unchecked), or None when there are none."""
        data = await self.run(functools.partial(queries.inline_gradient, tx_id=rec.id))
        if data is None and rec.gradient_path:
            data = await artifacts.read_if_present(Path(rec.gradient_path))
        return data

    async def has_gradient(self, rec: TransactionRecord) -> bool:
        if await self.run(functools.partial(queries.has_gradient_row, tx_id=rec.id)):
            return True
        path = rec.gradient_path
        return path is not None and await artifacts.exists(Path(path))
