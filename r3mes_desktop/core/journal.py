"""The durable journal: SQLite, the single source of truth for every mining transaction.

Why it looks like this:
- WAL + `synchronous=FULL`: a commit is on disk before `apply` returns, so "journaled
  before the effect" holds even across power loss, not only process kills.
- One connection, used only from a single-worker executor: sqlite never blocks the asyncio
  loop and writes are naturally serialised (no "database is locked").
- Every write is one `Change` applied in one sqlite transaction: a transition, its history
  rows, its outbox/compensation/dead-letter rows and its artifacts land together or not at all.
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
import itertools
import json
import sqlite3
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from r3mes_desktop.core import artifacts
from r3mes_desktop.core.errors import IntegrityError, ValidationError
from r3mes_desktop.core.journal_batch import BatchStats, GroupCommitter, Write
from r3mes_desktop.core.journal_integrity import check_integrity
from r3mes_desktop.core.journal_schema import MIGRATIONS, SCHEMA_VERSION
from r3mes_desktop.core.records import (
    CompensationRow,
    DeadLetter,
    HistoryEntry,
    OutboxRow,
    TransactionRecord,
    spec_from_json,
    spec_to_json,
)
from r3mes_desktop.core.steps import RoundSpec
from r3mes_desktop.core.txstate import NON_TERMINAL, TERMINAL, TxState

T = TypeVar("T")

_TX_COLUMNS = (
    "id, round_id, miner, state, spec, created_at, updated_at, deadline, finished_at, "
    "attempts, next_retry_at, failed_step, error_category, error_message, gradient_hash, "
    "gradient_path, pow_nonce, cid, signed_raw, tx_hash, account_nonce, receipt_block, "
    "compensation, training_step, pinned_before"
)
_UPDATABLE = frozenset(
    {
        "deadline",
        "attempts",
        "next_retry_at",
        "failed_step",
        "error_category",
        "error_message",
        "gradient_hash",
        "gradient_path",
        "pow_nonce",
        "cid",
        "signed_raw",
        "tx_hash",
        "account_nonce",
        "receipt_block",
        "compensation",
        "training_step",
        "pinned_before",
        "created_at",
    }
)
_HISTORY_COLUMNS = (
    "transaction_id, ts, kind, old_state, new_state, step, attempt, delay, category, message"
)
_UNFINISHED_SQL = "state NOT IN ('committed', 'failed', 'rolled_back')"


class StaleStateError(ValidationError):
    """A change expected the transaction in one state and found it in another."""


class DuplicateRoundError(ValidationError):
    """(round, miner) already has a live/committed transaction or a signed submission."""


@dataclass
class Change:
    """Everything one step boundary writes, applied atomically by `Journal.apply`."""

    tx_id: str
    now: float
    state: TxState | None = None
    via: TxState | None = None  # a state passed through within this commit (history only)
    expect: frozenset[TxState] | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    history: list[HistoryEntry] = field(default_factory=list)
    claim_submission: bool = False  # needs fields tx_hash: the (round, miner) guard
    outbox_add: bool = False
    outbox_done: bool = False
    outbox_retry: tuple[float, str] | None = None  # next attempt at, last error
    compensations_add: list[tuple[str, str]] = field(default_factory=list)
    compensations_done: list[int] = field(default_factory=list)
    dead_letter: tuple[str, str, dict[str, Any]] | None = None  # reason, category, payload
    durable: bool = True  # on disk before `apply` returns: intent records, terminal states
    artifact: tuple[Path, bytes] | None = None  # the gradient: a row, or a durable file
    remove_after: tuple[Path, ...] = ()  # files deleted once the change is committed


INLINE_GRADIENT_MAX = 256 * 1024
"""Gradients up to this size are stored in the journal itself (see the module doc)."""


_spec = functools.lru_cache(maxsize=1024)(spec_from_json)
"""A transaction's spec never changes and every write of it reads it back: parse it once
(RoundSpec is frozen; records of one transaction share it)."""


def _record(row: sqlite3.Row | tuple[Any, ...]) -> TransactionRecord:
    return TransactionRecord(
        id=row[0],
        round_id=row[1],
        miner=row[2],
        state=TxState(row[3]),
        spec=_spec(row[4]),
        created_at=row[5],
        updated_at=row[6],
        deadline=row[7],
        finished_at=row[8],
        attempts=row[9],
        next_retry_at=row[10],
        failed_step=row[11],
        error_category=row[12],
        error_message=row[13],
        gradient_hash=row[14],
        gradient_path=row[15],
        pow_nonce=int(row[16]) if row[16] is not None else None,
        cid=row[17],
        signed_raw=bytes(row[18]) if row[18] is not None else None,
        tx_hash=row[19],
        account_nonce=row[20],
        receipt_block=row[21],
        compensation=row[22],
        training_step=row[23],
        pinned_before=None if row[24] is None else bool(row[24]),
    )


def _history(row: tuple[Any, ...]) -> HistoryEntry:
    return HistoryEntry(*row)


_HISTORY_ROW = "(?,?,?,?,?,?,?,?,?,?)"
_HISTORY_CHUNK = 16
_INSERT_HISTORY = [""] + [
    f"INSERT INTO events ({_HISTORY_COLUMNS}) VALUES "  # noqa: S608
    + ",".join([_HISTORY_ROW] * n)
    for n in range(1, _HISTORY_CHUNK + 1)
]


def _insert_history(conn: sqlite3.Connection, entries: Iterable[HistoryEntry]) -> None:
    """One statement for up to 16 rows (more go in chunks): per-statement cost, not
    per-row cost, dominates at this size."""
    rows = list(entries)
    for start in range(0, len(rows), _HISTORY_CHUNK):
        chunk = rows[start : start + _HISTORY_CHUNK]
        conn.execute(
            _INSERT_HISTORY[len(chunk)],
            [
                value
                for h in chunk
                for value in (
                    h.transaction_id,
                    h.ts,
                    h.kind,
                    h.old_state,
                    h.new_state,
                    h.step,
                    h.attempt,
                    h.delay,
                    h.category,
                    h.message,
                )
            ],
        )


class _HistoryRows:
    """History rows of the writes of one group commit, inserted together just before its
    commit (see journal_batch.Deferred); touched only on the journal thread."""

    def __init__(self) -> None:
        self._rows: list[HistoryEntry] = []

    def add(self, entries: Iterable[HistoryEntry]) -> None:
        self._rows.extend(entries)

    def flush(self, conn: sqlite3.Connection) -> None:
        rows, self._rows = self._rows, []
        if rows:
            _insert_history(conn, rows)

    def discard(self) -> None:
        self._rows.clear()


@functools.lru_cache(maxsize=256)
def _update_sql(names: tuple[str, ...]) -> str:
    """The state-checked UPDATE for these columns (whitelisted: `_UPDATABLE` + state)."""
    assignments = ", ".join(f"{name} = ?" for name in names)
    return (
        f"UPDATE transactions SET {assignments} WHERE id = ? AND state = ? "  # noqa: S608
        f"RETURNING {_TX_COLUMNS}"
    )


def _history_in(conn: sqlite3.Connection, tx_id: str) -> list[HistoryEntry]:
    rows = conn.execute(
        f"SELECT {_HISTORY_COLUMNS} FROM events WHERE transaction_id = ? ORDER BY id",  # noqa: S608
        (tx_id,),
    )
    return [_history(r) for r in rows]


def migrate(conn: sqlite3.Connection, *, target: int = SCHEMA_VERSION) -> int:
    """Apply the missing migrations up to `target`; each in its own transaction."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise ValidationError(
            f"journal schema version {version} is newer than this program supports "
            f"(1..{SCHEMA_VERSION}); refusing to open it"
        )
    for number in range(version + 1, target + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in MIGRATIONS[number - 1]:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return target


def connect(path: Path, *, synchronous: str = "FULL") -> sqlite3.Connection:
    """Open (creating) a journal file with our pragmas; autocommit, explicit BEGINs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=True)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA busy_timeout = 5000")
    return conn


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
        self._history = _HistoryRows()
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
        await self._call(self._open_sync)

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
        await self._call(self._close_sync)
        self._shutdown_threads()

    def _shutdown_threads(self) -> None:
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

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise RuntimeError("journal is not open")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

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
        `remove_after` deleted after it (see journal_batch)."""
        if self._executor is None:
            raise RuntimeError("journal is not open")
        result: T = await self._writer.submit(
            Write(fn, durable=durable, artifact=artifact, remove_after=remove_after)
        )
        return result

    async def settle(self) -> None:
        """Wait until queued writes are committed and the files they release are deleted."""
        await self._writer.drain()

    @property
    def write_stats(self) -> BatchStats:
        return self._writer.stats

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(conn)` on the journal thread (for read-only queries: stats, analytics)."""
        return await self._call(lambda: fn(self._db()))

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("journal is not open")
        return self._conn

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
        """Insert a new transaction. `start=TRAINING` records PENDING → TRAINING in the
        same commit (nothing happens in between, so one commit loses nothing)."""
        return await self._write(
            functools.partial(self._create_in_txn, tx_id, spec, miner, now, deadline, start)
        )

    def _create_in_txn(
        self,
        tx_id: str,
        spec: RoundSpec,
        miner: str,
        now: float,
        deadline: float | None,
        start: TxState,
        conn: sqlite3.Connection,
    ) -> TransactionRecord:
        if start not in (TxState.PENDING, TxState.TRAINING):
            raise ValidationError(f"a transaction starts pending or training, not {start}")
        history = [HistoryEntry(tx_id, now, "transition", None, TxState.PENDING.value)]
        if start is TxState.TRAINING:
            history.append(
                HistoryEntry(tx_id, now, "transition", TxState.PENDING.value, start.value)
            )
        try:
            # inserted only if no submission was ever signed for this (round, miner)
            inserted = conn.execute(
                "INSERT INTO transactions (id, round_id, miner, state, spec, created_at, "
                "updated_at, deadline) SELECT ?,?,?,?,?,?,?,? WHERE NOT EXISTS "
                "(SELECT 1 FROM submissions WHERE round_id = ? AND miner = ?)",
                (
                    *(tx_id, spec.round_id, miner, start.value, spec_to_json(spec)),
                    *(now, now, deadline, spec.round_id, miner),
                ),
            ).rowcount
        except sqlite3.IntegrityError as exc:
            raise DuplicateRoundError(
                f"round {spec.round_id} already has a live or committed transaction "
                f"for miner {miner}"
            ) from exc
        if inserted != 1:
            signed_by = conn.execute(
                "SELECT transaction_id FROM submissions WHERE round_id = ? AND miner = ?",
                (spec.round_id, miner),
            ).fetchone()
            raise DuplicateRoundError(
                f"round {spec.round_id} already has a submission signed by transaction "
                f"{signed_by[0] if signed_by else '?'}; retry that transaction instead of "
                "starting another"
            )
        self._history.add(history)
        return TransactionRecord(
            id=tx_id,
            round_id=spec.round_id,
            miner=miner,
            state=start,
            spec=spec,
            created_at=now,
            updated_at=now,
            deadline=deadline,
        )

    async def apply(self, change: Change) -> TransactionRecord:
        """Apply `change` in one sqlite transaction and return the updated record.

        A small gradient (`artifact`) becomes a row of this transaction (its record then
        has no `gradient_path`); a big one a durable file written before the commit."""
        inline: bytes | None = None
        if change.artifact is not None and len(change.artifact[1]) <= self.inline_gradient_max:
            inline = change.artifact[1]
            change = dataclasses.replace(
                change, artifact=None, fields={**change.fields, "gradient_path": None}
            )
        removals = list(change.remove_after)  # the commit may add the gradient's file
        return await self._write(
            functools.partial(self._apply_in_txn_conn, change, inline, removals),
            durable=change.durable,
            artifact=change.artifact,
            remove_after=removals,
        )

    def _apply_in_txn_conn(
        self,
        change: Change,
        inline: bytes | None,
        removals: list[Path],
        conn: sqlite3.Connection,
    ) -> TransactionRecord:
        """The change, plus the gradient's lifecycle: stored with the upload's intent,
        released (row deleted in this commit, file once it is done) when nobody will read
        it again: on COMMITTED, and on ROLLED_BACK / FAILED unless an open dead letter's
        retry would upload it again."""
        after = self._apply_in_txn(conn, change)
        if inline is not None:
            conn.execute(
                "INSERT OR REPLACE INTO gradients (transaction_id, data) VALUES (?, ?)",
                (change.tx_id, inline),
            )
        self._release_gradient_if_unneeded(conn, after, removals)
        if after.state is TxState.COMMITTED:
            self._supersede_letters(conn, removals, now=change.now, committed=after)
        return after

    def _supersede_letters(
        self,
        conn: sqlite3.Connection,
        removals: list[Path],
        *,
        now: float,
        committed: TransactionRecord | None = None,
    ) -> int:
        """Close the open dead letters of rounds a transaction has committed (all of them,
        or `committed`'s round): their retry could only fail, so left open they would wait
        forever. Each closed letter's transaction gets a history line, and its gradient goes
        with the letter. Returns how many were closed."""
        where = (
            "SELECT c.id, c.round_id, c.miner FROM transactions c WHERE c.state = 'committed'"
        )
        params: tuple[Any, ...] = ()
        if committed is not None:
            where += " AND c.id = ?"
            params = (committed.id,)
        rows = conn.execute(
            f"WITH settled AS ({where}) "  # noqa: S608 - fixed SQL, values are parameters
            "UPDATE dead_letters SET status = 'superseded', resolved_at = ? "
            "WHERE status = 'open' AND transaction_id IN (SELECT t.id FROM transactions t "
            "JOIN settled s ON s.round_id = t.round_id AND s.miner = t.miner AND s.id != t.id) "
            "RETURNING transaction_id, round_id",
            (*params, now),
        ).fetchall()
        entries = []
        for tx_id, round_id in rows:
            winner = conn.execute(
                "SELECT id FROM transactions WHERE round_id = ? AND state = 'committed' "
                "AND miner = (SELECT miner FROM transactions WHERE id = ?)",
                (round_id, tx_id),
            ).fetchone()
            entries.append(
                HistoryEntry(
                    tx_id,
                    now,
                    "note",
                    message=f"dead letter closed as superseded: round {round_id} was "
                    f"committed by transaction {winner[0] if winner else '?'}",
                )
            )
            rec = self._get_in(conn, tx_id)
            if rec is not None:
                self._release_gradient_if_unneeded(conn, rec, removals)
        self._history.add(entries)
        return len(rows)

    async def supersede_settled_letters(self, *, now: float) -> int:
        """Close every open dead letter whose round another transaction has committed (a
        journal written before letters closed themselves at the commit)."""
        removals: list[Path] = []
        closed: int = await self._write(
            functools.partial(self._supersede_letters, removals=removals, now=now),
            remove_after=removals,
        )
        return closed

    @staticmethod
    def _release_gradient_if_unneeded(
        conn: sqlite3.Connection, rec: TransactionRecord, removals: list[Path]
    ) -> None:
        """Delete `rec`'s gradient row (in this commit) and queue its file (deleted after
        it) if nobody will read it again: committed, or undone with no open dead letter."""
        if rec.state is TxState.COMMITTED:
            released = True
        elif rec.state in (TxState.ROLLED_BACK, TxState.FAILED):
            open_letter = conn.execute(
                "SELECT 1 FROM dead_letters WHERE transaction_id = ? AND status = 'open'",
                (rec.id,),
            ).fetchone()
            released = open_letter is None
        else:
            released = False
        if released:
            conn.execute("DELETE FROM gradients WHERE transaction_id = ?", (rec.id,))
            if rec.gradient_path:
                removals.append(Path(rec.gradient_path))

    def _apply_in_txn(self, conn: sqlite3.Connection, c: Change) -> TransactionRecord:
        """Apply `c` and return the record as it now stands in the journal.

        When `c.expect` names one state (every saga step does), that state is the old one
        and a single `UPDATE ... WHERE state = ? RETURNING` checks, writes and reads back;
        otherwise the state is read first. No row returned: missing or in another state."""
        bad = set(c.fields) - _UPDATABLE
        if bad:
            raise ValidationError(f"journal fields {sorted(bad)} cannot be updated")
        if c.expect is not None and len(c.expect) == 1:
            (old,) = c.expect
        else:
            old = self._state_of(conn, c)
        sets = dict(c.fields)
        if "pow_nonce" in sets and sets["pow_nonce"] is not None:
            sets["pow_nonce"] = str(sets["pow_nonce"])
        history = list(c.history)
        if c.state is not None and c.state is not old:
            sets["state"] = c.state.value
            if c.state in TERMINAL:
                sets["finished_at"] = c.now
            elif old in TERMINAL:
                sets["finished_at"] = None
            hops = [old, c.state] if c.via is None else [old, c.via, c.state]
            history[:0] = [
                HistoryEntry(
                    c.tx_id,
                    c.now,
                    "transition",
                    a.value,
                    b.value,
                    step=c.fields.get("failed_step"),
                    category=c.fields.get("error_category"),
                    message=c.fields.get("error_message"),
                )
                for a, b in itertools.pairwise(hops)
            ]
        sets["updated_at"] = c.now
        try:
            rows = conn.execute(
                _update_sql(tuple(sets)), (*sets.values(), c.tx_id, old.value)
            ).fetchall()
        except sqlite3.IntegrityError as exc:
            row = conn.execute(
                "SELECT round_id, miner FROM transactions WHERE id = ?", (c.tx_id,)
            ).fetchone()
            raise DuplicateRoundError(
                f"round {row[0]} already has a live or committed transaction for {row[1]}"
            ) from exc
        if not rows:
            self._state_of(conn, c)  # raises: missing, or not in the expected state
            raise StaleStateError(f"transaction {c.tx_id} changed state while being written")
        after = _record(rows[0])
        round_id, miner = after.round_id, after.miner
        if c.claim_submission:
            # One statement: insert the claim, or refresh our own; another owner's row is
            # left alone (the WHERE) and shows as "nothing changed".
            claimed = conn.execute(
                "INSERT INTO submissions (round_id, miner, transaction_id, tx_hash, signed_at) "
                "VALUES (?,?,?,?,?) ON CONFLICT (round_id, miner) DO UPDATE SET "
                "tx_hash = excluded.tx_hash, signed_at = excluded.signed_at "
                "WHERE submissions.transaction_id = excluded.transaction_id",
                (round_id, miner, c.tx_id, c.fields["tx_hash"], c.now),
            ).rowcount
            if claimed != 1:
                owner = conn.execute(
                    "SELECT transaction_id FROM submissions WHERE round_id = ? AND miner = ?",
                    (round_id, miner),
                ).fetchone()
                raise DuplicateRoundError(
                    f"a submission for round {round_id} was already signed by "
                    f"transaction {owner[0] if owner else '?'}; refusing to sign a second one"
                )
        if c.outbox_add:
            conn.execute(
                "INSERT OR IGNORE INTO outbox (transaction_id, round_id, created_at, "
                "next_attempt_at) VALUES (?,?,?,?)",
                (c.tx_id, round_id, c.now, c.now),
            )
        if c.outbox_done:
            conn.execute(
                "UPDATE outbox SET done_at = ?, attempts = attempts + 1, last_error = NULL "
                "WHERE transaction_id = ? AND done_at IS NULL",
                (c.now, c.tx_id),
            )
        if c.outbox_retry is not None:
            conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?, last_error = ? "
                "WHERE transaction_id = ? AND done_at IS NULL",
                (*c.outbox_retry, c.tx_id),
            )
        for action, target in c.compensations_add:
            conn.execute(
                "INSERT INTO compensations (transaction_id, action, target, status, "
                "next_attempt_at, created_at, updated_at) VALUES (?,?,?,'pending',?,?,?) "
                "ON CONFLICT (transaction_id, action, target) DO UPDATE SET "
                "status = 'pending', updated_at = excluded.updated_at",
                (c.tx_id, action, target, c.now, c.now, c.now),
            )
        for comp_id in c.compensations_done:
            conn.execute(
                "UPDATE compensations SET status = 'done', attempts = attempts + 1, "
                "last_error = NULL, updated_at = ? WHERE id = ?",
                (c.now, comp_id),
            )
        if c.dead_letter is not None:
            reason, category, payload = c.dead_letter
            conn.execute(
                "INSERT INTO dead_letters (id, transaction_id, round_id, created_at, reason, "
                "category, payload, status) VALUES (?,?,?,?,?,?,?,'open')",
                (
                    uuid.uuid4().hex,
                    c.tx_id,
                    round_id,
                    c.now,
                    reason,
                    category,
                    json.dumps(payload, sort_keys=True),
                ),
            )
        self._history.add(history)
        return after

    @staticmethod
    def _state_of(conn: sqlite3.Connection, c: Change) -> TxState:
        row = conn.execute("SELECT state FROM transactions WHERE id = ?", (c.tx_id,)).fetchone()
        if row is None:
            raise ValidationError(f"transaction_id {c.tx_id!r} is not in the journal")
        state = TxState(row[0])
        if c.expect is not None and state not in c.expect:
            raise StaleStateError(
                f"transaction {c.tx_id} is {state.value}, expected one of "
                f"{sorted(s.value for s in c.expect)}"
            )
        return state

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
            rec = None if row is None else self._get_in(conn, row[0])
            if rec is not None:
                self._release_gradient_if_unneeded(conn, rec, removals)

        await self._write(write, remove_after=removals)

    # -- reads ---------------------------------------------------------------------------
    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """A light query served by the group commit's next batch, after its commit: one
        trip to the journal thread shared with the writes queued beside it."""
        if self._executor is None:
            raise RuntimeError("journal is not open")
        result: T = await self._writer.submit(Write(fn, read=True))
        return result

    async def get(self, tx_id: str) -> TransactionRecord | None:
        return await self._read(functools.partial(self._get_in, tx_id=tx_id))

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
        data = await self._read(functools.partial(self._inline_gradient, tx_id=rec.id))
        if data is None and rec.gradient_path:
            data = await artifacts.read_if_present(Path(rec.gradient_path))
        return data

    async def has_gradient(self, rec: TransactionRecord) -> bool:
        found = await self._read(
            lambda conn: conn.execute(
                "SELECT 1 FROM gradients WHERE transaction_id = ?", (rec.id,)
            ).fetchone()
        )
        path = rec.gradient_path
        return found is not None or (path is not None and await artifacts.exists(Path(path)))

    @staticmethod
    def _inline_gradient(conn: sqlite3.Connection, tx_id: str) -> bytes | None:
        row = conn.execute("SELECT data FROM gradients WHERE transaction_id = ?", (tx_id,))
        found = row.fetchone()
        return None if found is None else bytes(found[0])

    @staticmethod
    def _get_in(conn: sqlite3.Connection, tx_id: str) -> TransactionRecord | None:
        row = conn.execute(
            f"SELECT {_TX_COLUMNS} FROM transactions WHERE id = ?",  # noqa: S608
            (tx_id,),
        ).fetchone()
        return _record(row) if row is not None else None

    async def list_transactions(
        self, *, states: Iterable[TxState] | None = None, limit: int = 200
    ) -> list[TransactionRecord]:
        wanted = None if states is None else [TxState(s).value for s in states]
        return await self._call(self._list_sync, wanted, limit)

    def _list_sync(self, states: list[str] | None, limit: int) -> list[TransactionRecord]:
        sql = f"SELECT {_TX_COLUMNS} FROM transactions"  # noqa: S608
        params: list[Any] = []
        if states is not None:
            sql += f" WHERE state IN ({','.join('?' * len(states))})"
            params.extend(states)
        sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
        params.append(limit)
        return [_record(r) for r in self._db().execute(sql, params)]

    async def gradient_holders(self) -> set[str]:
        """Ids of the transactions whose gradient may still be read: the unfinished ones
        and those with an open dead letter (a retry uploads it again)."""
        rows = await self._read(
            lambda conn: conn.execute(
                f"SELECT id FROM transactions WHERE {_UNFINISHED_SQL} "  # noqa: S608
                "UNION SELECT transaction_id FROM dead_letters WHERE status = 'open'"
            ).fetchall()
        )
        return {str(row[0]) for row in rows}

    async def unfinished(self) -> list[TransactionRecord]:
        """Every non-terminal transaction (uses the partial index: fast on big journals)."""
        return await self._call(self._unfinished_sync)

    def _unfinished_sync(self) -> list[TransactionRecord]:
        rows = self._db().execute(
            f"SELECT {_TX_COLUMNS} FROM transactions WHERE {_UNFINISHED_SQL} "  # noqa: S608
            "ORDER BY created_at"
        )
        return [_record(r) for r in rows]

    async def snapshot(self, tx_id: str) -> tuple[TransactionRecord | None, list[HistoryEntry]]:
        """The record and its history, read together (one trip to the journal thread)."""
        return await self._read(lambda conn: (self._get_in(conn, tx_id), _history_in(conn, tx_id)))

    async def history(self, tx_id: str) -> list[HistoryEntry]:
        return await self._read(functools.partial(_history_in, tx_id=tx_id))

    async def cid_needed_by(self, cid: str, *, other_than: str) -> tuple[str, TxState] | None:
        """A transaction other than `other_than` that still needs `cid` pinned: committed,
        or on its way (not failed, not undone, not being undone). Committed ones first."""

        def query(conn: sqlite3.Connection) -> tuple[str, TxState] | None:
            row = conn.execute(
                "SELECT id, state FROM transactions WHERE cid = ? AND id != ? "
                "AND state NOT IN ('failed', 'rolled_back', 'compensating') "
                "ORDER BY state != 'committed' LIMIT 1",
                (cid, other_than),
            ).fetchone()
            return None if row is None else (str(row[0]), TxState(row[1]))

        return await self.run(query)

    async def submission_owner(self, round_id: int, miner: str) -> str | None:
        def query(conn: sqlite3.Connection) -> str | None:
            row = conn.execute(
                "SELECT transaction_id FROM submissions WHERE round_id = ? AND miner = ?",
                (round_id, miner),
            ).fetchone()
            return None if row is None else str(row[0])

        return await self.run(query)

    async def submitted_rounds(self, miner: str) -> set[int]:
        """Rounds this miner has a live/committed transaction or a signed submission for."""

        def query(conn: sqlite3.Connection) -> set[int]:
            rows = conn.execute(
                "SELECT round_id FROM submissions WHERE miner = ? UNION "
                "SELECT round_id FROM transactions WHERE miner = ? "
                "AND state NOT IN ('failed', 'rolled_back')",
                (miner, miner),
            )
            return {int(r[0]) for r in rows}

        return await self.run(query)

    async def compensations(
        self, *, tx_id: str | None = None, due_before: float | None = None
    ) -> list[CompensationRow]:
        def query(conn: sqlite3.Connection) -> list[CompensationRow]:
            sql = (
                "SELECT id, transaction_id, action, target, status, attempts, "
                "next_attempt_at, last_error FROM compensations WHERE status = 'pending'"
            )
            params: list[Any] = []
            if tx_id is not None:
                sql += " AND transaction_id = ?"
                params.append(tx_id)
            if due_before is not None:
                sql += " AND next_attempt_at <= ?"
                params.append(due_before)
            sql += " ORDER BY id DESC"  # reverse order of registration
            return [CompensationRow(*r) for r in conn.execute(sql, params)]

        return await self.run(query)

    async def outbox(self, *, due_before: float | None = None) -> list[OutboxRow]:
        def query(conn: sqlite3.Connection) -> list[OutboxRow]:
            sql = (
                "SELECT transaction_id, round_id, attempts, next_attempt_at, last_error, "
                "done_at FROM outbox WHERE done_at IS NULL"
            )
            params: list[Any] = []
            if due_before is not None:
                sql += " AND next_attempt_at <= ?"
                params.append(due_before)
            return [OutboxRow(*r) for r in conn.execute(sql + " ORDER BY created_at", params)]

        return await self.run(query)

    async def dead_letters(
        self, *, status: str | None = "open", dl_id: str | None = None
    ) -> list[DeadLetter]:
        def query(conn: sqlite3.Connection) -> list[DeadLetter]:
            sql = (
                "SELECT id, transaction_id, round_id, created_at, reason, category, payload, "
                "status, resolved_at FROM dead_letters"
            )
            params: list[Any] = []
            if status is not None:
                sql += " WHERE status = ?"
                params.append(status)
            if dl_id is not None:
                sql += " AND id = ?" if status is not None else " WHERE id = ?"
                params.append(dl_id)
            return [
                DeadLetter(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]), r[7], r[8])
                for r in conn.execute(sql + " ORDER BY created_at, id", params)
            ]

        return await self.run(query)

    async def integrity_check(self, *, full: bool = True) -> list[str]:
        """`PRAGMA integrity_check` plus our invariants; an empty list means healthy.

        `full=False` checks only the invariants of unfinished and recent transactions
        (what start-up runs: milliseconds instead of seconds on a big journal)."""
        return await self.run(functools.partial(check_integrity, full=full))


__all__ = [
    "NON_TERMINAL",
    "Change",
    "DuplicateRoundError",
    "Journal",
    "StaleStateError",
    "connect",
    "migrate",
]
