"""A journal write: the `Change` a step returns, and how it is applied in one transaction.

Every write is one `Change` applied in one sqlite transaction: a transition, its history
rows, its outbox/compensation/dead-letter rows and its artifacts land together or not at
all. The functions run on the journal thread, inside the group commit's transaction.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from r3mes_desktop.core.errors import ValidationError
from r3mes_desktop.core.journal.rows import (
    UPDATABLE,
    HistoryRows,
    fetched_json,
    record_of,
    update_sql,
)
from r3mes_desktop.core.records import HistoryEntry, TransactionRecord, spec_to_json
from r3mes_desktop.core.steps import RoundSpec
from r3mes_desktop.core.txstate import TERMINAL, TxState


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
"""Gradients up to this size are stored in the journal itself (see `Journal`)."""


def create_in_txn(
    conn: sqlite3.Connection,
    history: HistoryRows,
    *,
    tx_id: str,
    spec: RoundSpec,
    miner: str,
    now: float,
    deadline: float | None,
    start: TxState,
) -> TransactionRecord:
    """Insert a new transaction, refused when (round, miner) already has a live or committed
    one or a signed submission. `start=FETCH` or `start=TRAINING` records PENDING → start in
    the same commit (nothing happens in between, so one commit loses nothing)."""
    if start not in (TxState.PENDING, TxState.FETCH, TxState.TRAINING):
        raise ValidationError(f"a transaction starts pending, fetch or training, not {start}")
    entries = [HistoryEntry(tx_id, now, "transition", None, TxState.PENDING.value)]
    if start is not TxState.PENDING:
        entries.append(HistoryEntry(tx_id, now, "transition", TxState.PENDING.value, start.value))
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
            f"round {spec.round_id} already has a live or committed transaction for miner {miner}"
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
    history.add(entries)
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


def apply_in_txn(conn: sqlite3.Connection, history: HistoryRows, c: Change) -> TransactionRecord:
    """Apply `c` and return the record as it now stands in the journal.

    When `c.expect` names one state (every saga step does), that state is the old one and a
    single `UPDATE ... WHERE state = ? RETURNING` checks, writes and reads back; otherwise
    the state is read first. No row returned: missing or in another state."""
    bad = set(c.fields) - UPDATABLE
    if bad:
        raise ValidationError(f"journal fields {sorted(bad)} cannot be updated")
    if c.expect is not None and len(c.expect) == 1:
        (old,) = c.expect
    else:
        old = state_of(conn, c)
    sets, entries = _sets_and_history(c, old)
    try:
        rows = conn.execute(
            update_sql(tuple(sets)), (*sets.values(), c.tx_id, old.value)
        ).fetchall()
    except sqlite3.IntegrityError as exc:
        row = conn.execute(
            "SELECT round_id, miner FROM transactions WHERE id = ?", (c.tx_id,)
        ).fetchone()
        raise DuplicateRoundError(
            f"round {row[0]} already has a live or committed transaction for {row[1]}"
        ) from exc
    if not rows:
        state_of(conn, c)  # raises: missing, or not in the expected state
        raise StaleStateError(f"transaction {c.tx_id} changed state while being written")
    after = record_of(rows[0])
    if c.claim_submission:
        _claim_submission(conn, c, after)
    _outbox_rows(conn, c, after.round_id)
    _compensation_rows(conn, c)
    if c.dead_letter is not None:
        reason, category, payload = c.dead_letter
        conn.execute(
            "INSERT INTO dead_letters (id, transaction_id, round_id, created_at, reason, "
            "category, payload, status) VALUES (?,?,?,?,?,?,?,'open')",
            (
                *(uuid.uuid4().hex, c.tx_id, after.round_id, c.now, reason, category),
                json.dumps(payload, sort_keys=True),
            ),
        )
    history.add(entries)
    return after


def _sets_and_history(c: Change, old: TxState) -> tuple[dict[str, Any], list[HistoryEntry]]:
    """The columns to write, and the history rows (the transitions first)."""
    sets = dict(c.fields)
    if "pow_nonce" in sets and sets["pow_nonce"] is not None:
        sets["pow_nonce"] = str(sets["pow_nonce"])
    if "fetched" in sets:
        sets["fetched"] = fetched_json(sets["fetched"])
    entries = list(c.history)
    if c.state is not None and c.state is not old:
        sets["state"] = c.state.value
        if c.state in TERMINAL:
            sets["finished_at"] = c.now
        elif old in TERMINAL:
            sets["finished_at"] = None
        hops = [old, c.state] if c.via is None else [old, c.via, c.state]
        entries[:0] = [
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
    return sets, entries


def _claim_submission(conn: sqlite3.Connection, c: Change, after: TransactionRecord) -> None:
    """One statement: insert the (round, miner) claim, or refresh our own; another owner's
    row is left alone (the WHERE) and shows as "nothing changed"."""
    round_id, miner = after.round_id, after.miner
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


def _outbox_rows(conn: sqlite3.Connection, c: Change, round_id: int) -> None:
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


def _compensation_rows(conn: sqlite3.Connection, c: Change) -> None:
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


def state_of(conn: sqlite3.Connection, c: Change) -> TxState:
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
