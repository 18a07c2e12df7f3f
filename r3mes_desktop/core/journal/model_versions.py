"""What the journal keeps of the network model's versions: reads and writes of one concept.

A version is read from the contract, never decided by the miner, so the table is a copy
of the chain's records: written once per version (a version read twice is written once),
dropped whole when the chain turns out to hold other versions (another network, a devnet
started afresh). The functions run on the journal thread, inside the group commit
(writes) or after it (reads).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

from r3mes_desktop.core.records import ModelVersion

_COLUMNS = (
    "version_id, round_id, parent_id, eval_loss, updates, cid, content_hash, block_number, "
    "aggregator, seen_at"
)


def _version(row: tuple[Any, ...]) -> ModelVersion:
    v, r, parent, loss, updates, cid, digest, block, aggregator, seen = row
    return ModelVersion(
        version_id=int(v),
        round_id=int(r),
        parent_id=int(parent),
        eval_loss=float(loss),
        updates=int(updates),
        cid=str(cid),
        content_hash=str(digest),
        block_number=int(block),
        aggregator=str(aggregator),
        seen_at=float(seen),
    )


def record(conn: sqlite3.Connection, versions: Iterable[ModelVersion]) -> list[ModelVersion]:
    """Insert the versions not journaled yet; returns those inserted now, in id order."""
    inserted: list[ModelVersion] = []
    for v in sorted(versions, key=lambda v: v.version_id):
        cursor = conn.execute(
            f"INSERT OR IGNORE INTO model_versions ({_COLUMNS}) "  # noqa: S608
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                v.version_id,
                v.round_id,
                v.parent_id,
                v.eval_loss,
                v.updates,
                v.cid,
                v.content_hash,
                v.block_number,
                v.aggregator,
                v.seen_at,
            ),
        )
        if cursor.rowcount:
            inserted.append(v)
    return inserted


def forget(conn: sqlite3.Connection) -> int:
    """Drop every journaled version (the chain holds others); returns how many."""
    return int(conn.execute("DELETE FROM model_versions").rowcount)


def known_ids(conn: sqlite3.Connection) -> set[int]:
    return {int(v) for (v,) in conn.execute("SELECT version_id FROM model_versions")}


def newest(conn: sqlite3.Connection) -> ModelVersion | None:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM model_versions ORDER BY version_id DESC LIMIT 1"  # noqa: S608
    ).fetchone()
    return None if row is None else _version(row)


def series(conn: sqlite3.Connection, limit: int) -> list[ModelVersion]:
    """The newest `limit` versions, oldest first (the network-loss chart)."""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM model_versions ORDER BY version_id DESC LIMIT ?",  # noqa: S608
        (limit,),
    ).fetchall()
    return [_version(r) for r in reversed(rows)]


def by_id(conn: sqlite3.Connection, ids: Iterable[int]) -> dict[int, ModelVersion]:
    wanted = sorted(set(ids))
    found: dict[int, ModelVersion] = {}
    for start in range(0, len(wanted), 500):  # under sqlite's bound-parameter limit
        chunk = wanted[start : start + 500]
        marks = ",".join("?" * len(chunk))
        for row in conn.execute(
            f"SELECT {_COLUMNS} FROM model_versions WHERE version_id IN ({marks})",  # noqa: S608
            chunk,
        ):
            version = _version(row)
            found[version.version_id] = version
    return found
