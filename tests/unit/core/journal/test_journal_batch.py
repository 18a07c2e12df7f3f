"""The group-commit write path: sync mode per batch, artifacts before the commit, deletions
after it, a failing write or artifact failing alone."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from r3mes_desktop.core import artifacts
from r3mes_desktop.core.journal import Change, Journal, StaleStateError
from r3mes_desktop.core.records import HistoryEntry
from r3mes_desktop.core.txstate import TxState
from tests.helpers.fakes import MINER, make_spec


def _sync_mode(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA synchronous").fetchone()[0])  # 1 NORMAL, 2 FULL


async def test_only_batches_holding_a_durable_write_commit_with_full(journal: Journal) -> None:
    assert await journal._write(_sync_mode, durable=False) == 1
    assert await journal._write(_sync_mode) == 2
    # a durable write makes its whole batch durable (and every earlier WAL frame with it)
    together = await asyncio.gather(
        journal._write(_sync_mode, durable=False),
        journal._write(_sync_mode, durable=True),
        journal._write(_sync_mode, durable=False),
    )
    assert together == [2, 2, 2]
    stats = journal.write_stats
    assert (stats.batches, stats.fsynced_commits) == (3, 2)


async def test_a_normal_journal_never_switches_to_full(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "n.db", synchronous="NORMAL")
    await journal.open()
    try:
        assert await journal._write(_sync_mode) == 1
        assert await journal._write(_sync_mode, durable=False) == 1
        assert journal.write_stats.fsynced_commits == 0
    finally:
        await journal.close()


async def test_the_artifact_is_on_disk_before_its_record_commits(
    journal: Journal, tmp_path: Path
) -> None:
    await journal.create(tx_id="a", spec=make_spec(1), miner=MINER, now=1.0, deadline=None)
    path = tmp_path / "artifacts" / "a.safetensors"
    seen: list[bytes] = []

    def check(conn: sqlite3.Connection) -> None:
        seen.append(path.read_bytes())  # runs inside the transaction, before COMMIT

    await journal._write(check, artifact=(path, b"gradient"))
    assert seen == [b"gradient"]
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


async def test_a_failing_artifact_fails_only_its_own_write(
    journal: Journal, tmp_path: Path
) -> None:
    journal.inline_gradient_max = 0  # files, whatever their size
    for tx, r in (("a", 1), ("b", 2)):
        await journal.create(tx_id=tx, spec=make_spec(r), miner=MINER, now=1.0, deadline=None)
    blocker = tmp_path / "not-a-dir"
    blocker.write_bytes(b"")
    good = tmp_path / "artifacts" / "b.safetensors"
    results = await asyncio.gather(
        journal.apply(
            Change("a", 2.0, state=TxState.TRAINING, artifact=(blocker / "a.safetensors", b"x"))
        ),
        journal.apply(Change("b", 2.0, state=TxState.TRAINING, artifact=(good, b"y"))),
        return_exceptions=True,
    )
    assert isinstance(results[0], OSError)
    a, b = await journal.get("a"), await journal.get("b")
    assert a is not None and a.state is TxState.PENDING
    assert b is not None and b.state is TxState.TRAINING and good.read_bytes() == b"y"


async def test_files_are_removed_only_after_their_change_committed(
    journal: Journal, tmp_path: Path
) -> None:
    await journal.create(tx_id="a", spec=make_spec(1), miner=MINER, now=1.0, deadline=None)
    kept, gone = tmp_path / "kept.bin", tmp_path / "gone.bin"
    kept.write_bytes(b"k")
    gone.write_bytes(b"g")
    with pytest.raises(StaleStateError):
        await journal.apply(
            Change(
                "a",
                2.0,
                state=TxState.COMMITTED,
                expect=frozenset({TxState.TASK_COMPLETE}),
                remove_after=(kept,),
            )
        )
    assert kept.exists()
    await journal.apply(Change("a", 3.0, state=TxState.TRAINING, remove_after=(gone,)))
    await journal.settle()  # deletions run off the journal thread
    assert not gone.exists() and journal.write_stats.removed == 1


def test_write_durable_many_writes_every_file_whole(tmp_path: Path) -> None:
    items = [(tmp_path / "d" / f"g{i}.safetensors", os.urandom(5000 + i)) for i in range(5)]
    items.append((tmp_path / "file" / "x", b"z"))
    (tmp_path / "file").write_bytes(b"")  # a file where a directory should be
    errors = artifacts.write_durable_many_sync(items)
    assert errors[:5] == [None] * 5 and isinstance(errors[5], OSError)
    for path, data in items[:5]:
        assert path.read_bytes() == data
        assert path.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == [
        f"g{i}.safetensors" for i in range(5)
    ]


async def test_a_queued_read_sees_the_writes_queued_before_it(journal: Journal) -> None:
    await journal.create(tx_id="a", spec=make_spec(1), miner=MINER, now=1.0, deadline=None)

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("SELECT nope FROM transactions")

    results = await asyncio.gather(
        journal.apply(Change("a", 2.0, state=TxState.TRAINING)),
        journal.get("a"),
        journal.run(broken),
        journal.history("a"),
        return_exceptions=True,
    )
    assert journal.write_stats.batches == 2  # create, then one batch for all four
    rec, failure, history = results[1], results[2], results[3]
    assert rec is not None and not isinstance(rec, BaseException)
    assert rec.state is TxState.TRAINING
    assert isinstance(failure, sqlite3.OperationalError)
    assert isinstance(history, list) and [h.new_state for h in history][-1] == "training"


_KILLED_AFTER_NORMAL_COMMIT = """
import asyncio, os, signal, sys
from r3mes_desktop.core.journal import Journal
from r3mes_desktop.core.records import HistoryEntry
from tests.helpers.fakes import MINER, make_spec

async def main() -> None:
    journal = Journal(sys.argv[1])
    await journal.open()
    await journal.create(tx_id="a", spec=make_spec(1), miner=MINER, now=1.0, deadline=None)
    await journal.append_history([HistoryEntry("a", 2.0, "note", message="not fsynced")])
    os.kill(os.getpid(), signal.SIGKILL)  # no close, no checkpoint

asyncio.run(main())
"""


def test_a_process_kill_loses_no_commit_even_a_normal_one(tmp_path: Path) -> None:
    """SQLite: committed WAL transactions survive an application crash whatever the sync
    mode; only a power loss can take the non-fsynced tail."""
    root = Path(__file__).resolve().parents[4]
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED_AFTER_NORMAL_COMMIT, str(tmp_path / "k.db")],
        cwd=root,
        timeout=60,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL
    conn = sqlite3.connect(str(tmp_path / "k.db"))
    try:
        messages = [r[0] for r in conn.execute("SELECT message FROM events ORDER BY id")]
    finally:
        conn.close()
    assert messages == [None, "not fsynced"]


async def test_writes_queued_while_a_batch_runs_share_the_next_one(journal: Journal) -> None:
    """The journal thread hands a batch back and starts the next with what queued meanwhile."""
    release = threading.Event()
    started = threading.Event()

    def slow(conn: sqlite3.Connection) -> str:
        started.set()
        release.wait(5)
        return "first"

    before = journal.write_stats.batches
    first = asyncio.ensure_future(journal._write(slow))
    assert await asyncio.to_thread(started.wait, 5)
    later = [asyncio.ensure_future(journal._write(_sync_mode)) for _ in range(3)]
    read = asyncio.ensure_future(journal.get("nobody"))
    await asyncio.sleep(0)
    assert not any(f.done() for f in [first, *later, read])
    release.set()
    assert await first == "first"
    assert await asyncio.gather(*later) == [2, 2, 2] and await read is None
    assert journal.write_stats.batches - before == 2


async def test_close_waits_for_the_deletions_of_committed_changes(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.db")
    await journal.open()
    await journal.create(tx_id="a", spec=make_spec(1), miner=MINER, now=1.0, deadline=None)
    gone = [tmp_path / f"g{i}.bin" for i in range(3)]
    for path in gone:
        path.write_bytes(b"g")
    await journal.apply(Change("a", 2.0, state=TxState.TRAINING, remove_after=tuple(gone)))
    await journal.close()
    assert not any(path.exists() for path in gone)
    assert journal.write_stats.removed == 3
    with pytest.raises(RuntimeError, match="not open"):
        await journal.get("a")


async def test_history_rows_of_a_batch_are_written_together_and_dropped_with_their_write(
    journal: Journal,
) -> None:
    """History rows wait for the end of the batch (one statement for many): a write that
    fails takes its rows with it, the others keep theirs, in order."""
    for tx in ("a", "b"):
        await journal.create(tx_id=tx, spec=make_spec(ord(tx)), miner=MINER, now=1.0, deadline=None)

    def fails_after_queuing(conn: sqlite3.Connection) -> None:
        journal._history.add([HistoryEntry("a", 9.0, "note", message="never")])
        raise sqlite3.IntegrityError("refused")

    notes = [HistoryEntry("b", 3.0 + i, "note", message=f"n{i}") for i in range(40)]
    before = journal.write_stats.batches
    results = await asyncio.gather(
        journal.apply(Change("a", 2.0, state=TxState.TRAINING)),
        journal._write(fails_after_queuing),
        journal.append_history(notes),
        journal.apply(Change("b", 50.0, state=TxState.TRAINING)),
        return_exceptions=True,
    )
    assert isinstance(results[1], sqlite3.IntegrityError)
    assert journal.write_stats.batches - before == 1
    history_a, history_b = await journal.history("a"), await journal.history("b")
    assert [h.new_state for h in history_a] == ["pending", "training"]
    assert "never" not in [h.message for h in history_a]
    assert history_b[1:-1] == notes and history_b[-1].new_state == "training"


async def test_a_query_queued_while_writes_stream_in_runs_between_batches(
    journal: Journal,
) -> None:
    """The journal thread chains batches itself, one job each: a query queued meanwhile is
    served by the next batch (seeing the writes queued before it), not after the stream of
    writes ends."""
    release = threading.Event()
    started = threading.Event()

    def slow(conn: sqlite3.Connection) -> None:
        started.set()
        release.wait(5)

    first = asyncio.ensure_future(journal._write(slow))
    assert await asyncio.to_thread(started.wait, 5)
    creates = [
        asyncio.ensure_future(
            journal.create(tx_id=f"t{i}", spec=make_spec(i), miner=MINER, now=1.0, deadline=None)
        )
        for i in range(3)
    ]
    await asyncio.sleep(0)
    count = asyncio.ensure_future(
        journal.run(lambda conn: conn.execute("SELECT COUNT(*) FROM transactions").fetchone()[0])
    )
    await asyncio.sleep(0)
    release.set()
    await first
    assert await count == 3  # served with the batch of creates queued ahead of it
    assert [rec.id for rec in await asyncio.gather(*creates)] == ["t0", "t1", "t2"]
    await journal.settle()
