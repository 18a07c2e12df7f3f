"""The journal: pragmas, migrations, atomic changes, the exactly-once guards, integrity."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from r3mes_desktop.core.errors import IntegrityError, ValidationError
from r3mes_desktop.core.journal import (
    Change,
    DuplicateRoundError,
    Journal,
    StaleStateError,
    connect,
    migrate,
)
from r3mes_desktop.core.journal.schema import SCHEMA_VERSION
from r3mes_desktop.core.records import HistoryEntry
from r3mes_desktop.core.txstate import TxState
from tests.helpers.fakes import MINER, make_spec


async def test_pragmas_and_schema_version(journal: Journal) -> None:
    def pragmas(conn: sqlite3.Connection) -> tuple[str, int, int]:
        return (
            conn.execute("PRAGMA journal_mode").fetchone()[0],
            conn.execute("PRAGMA synchronous").fetchone()[0],
            conn.execute("PRAGMA user_version").fetchone()[0],
        )

    assert await journal.run(pragmas) == ("wal", 2, SCHEMA_VERSION)  # 2 = FULL


def test_migrates_an_old_journal_in_place(tmp_path: Path) -> None:
    conn = connect(tmp_path / "old.db")
    migrate(conn, target=1)
    conn.execute(
        "INSERT INTO transactions (id, round_id, miner, state, spec, created_at, updated_at) "
        "VALUES ('t1', 1, 'm', 'committed', '{}', 1, 1)"
    )
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    migrate(conn)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("SELECT id, training_step FROM transactions").fetchall() == [("t1", None)]
    conn.close()


def test_refuses_a_newer_journal(tmp_path: Path) -> None:
    conn = connect(tmp_path / "new.db")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(ValidationError, match="newer than this program"):
        migrate(conn)
    conn.close()


async def test_one_live_transaction_per_round_and_one_signature_ever(journal: Journal) -> None:
    spec = make_spec(1)
    await journal.create(tx_id="a", spec=spec, miner=MINER, now=1.0, deadline=None)
    with pytest.raises(DuplicateRoundError, match="round 1"):
        await journal.create(tx_id="b", spec=spec, miner=MINER, now=2.0, deadline=None)
    await journal.apply(
        Change("a", 3.0, fields={"tx_hash": "0x1", "signed_raw": b"raw"}, claim_submission=True)
    )
    await journal.apply(Change("a", 4.0, state=TxState.ROLLED_BACK))
    # a rolled-back round whose submission was signed gets no new transaction...
    with pytest.raises(DuplicateRoundError, match="signed by transaction a"):
        await journal.create(tx_id="b", spec=spec, miner=MINER, now=5.0, deadline=None)
    # ...and the claim itself refuses a second signature, whoever asks
    await journal.create(tx_id="c", spec=make_spec(2), miner=MINER, now=5.0, deadline=None)
    await journal.run(
        lambda conn: conn.execute(
            "INSERT INTO submissions VALUES (2, ?, 'a', '0x9', 5.0)", (MINER,)
        )
    )
    with pytest.raises(DuplicateRoundError, match="already signed by transaction a"):
        await journal.apply(Change("c", 6.0, fields={"tx_hash": "0x2"}, claim_submission=True))
    rec = await journal.get("c")
    assert rec is not None and rec.tx_hash is None  # the failed change left nothing behind
    assert await journal.submission_owner(1, MINER) == "a"


async def test_group_commit_isolates_a_failing_write(journal: Journal) -> None:
    import asyncio

    for tx in ("a", "b"):
        await journal.create(tx_id=tx, spec=make_spec(ord(tx)), miner=MINER, now=1.0, deadline=None)
    results = await asyncio.gather(
        journal.apply(Change("a", 2.0, state=TxState.TRAINING)),
        journal.apply(Change("b", 2.0, state=TxState.TRAINING, expect=frozenset())),
        journal.apply(Change("b", 3.0, fields={"attempts": 5})),
        return_exceptions=True,
    )
    assert isinstance(results[1], StaleStateError)
    a, b = await journal.get("a"), await journal.get("b")
    assert a is not None and a.state is TxState.TRAINING
    assert b is not None and b.state is TxState.PENDING and b.attempts == 5


async def test_a_change_is_all_or_nothing(journal: Journal) -> None:
    await journal.create(tx_id="a", spec=make_spec(1), miner=MINER, now=1.0, deadline=None)
    with pytest.raises(StaleStateError):
        await journal.apply(
            Change(
                "a",
                2.0,
                state=TxState.TRAINING,
                expect=frozenset({TxState.IPFS_UPLOAD}),
                history=[HistoryEntry("a", 2.0, "note", message="x")],
            )
        )
    with pytest.raises(ValidationError, match="cannot be updated"):
        await journal.apply(Change("a", 2.0, fields={"state; DROP TABLE x": 1}))
    rec = await journal.get("a")
    assert rec is not None and rec.state is TxState.PENDING
    assert [h.kind for h in await journal.history("a")] == ["transition"]


async def test_terminal_states_stamp_finished_at(journal: Journal) -> None:
    await journal.create(tx_id="a", spec=make_spec(1), miner=MINER, now=1.0, deadline=None)
    rec = await journal.apply(Change("a", 9.0, state=TxState.FAILED))
    assert rec.finished_at == 9.0
    rec = await journal.apply(Change("a", 10.0, state=TxState.TRAINING))
    assert rec.finished_at is None


async def test_integrity_check_names_broken_invariants(journal: Journal) -> None:
    assert await journal.integrity_check() == []
    await journal.create(tx_id="a", spec=make_spec(1), miner=MINER, now=1.0, deadline=None)
    await journal.run(
        lambda conn: conn.execute("UPDATE transactions SET state = 'committed' WHERE id = 'a'")
    )
    problems = await journal.integrity_check()
    assert any("committed transaction without CID" in p and "a" in p for p in problems)
    assert any("without finished_at" in p for p in problems)


async def test_bad_synchronous_mode_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="synchronous"):
        Journal(tmp_path / "x.db", synchronous="OFF")


async def test_the_returned_record_is_what_the_journal_holds(journal: Journal) -> None:
    """`create` and `apply` build the record without reading it back: it must equal a read."""
    created = await journal.create(
        tx_id="a", spec=make_spec(1), miner=MINER, now=1.0, deadline=9.0, start=TxState.TRAINING
    )
    assert created == await journal.get("a")
    changes = [
        Change(
            "a",
            2.0,
            state=TxState.IPFS_UPLOAD,
            fields={"gradient_hash": "ab" * 32, "gradient_path": "/g", "pow_nonce": 2**70},
        ),
        Change(
            "a",
            3.0,
            state=TxState.BLOCKCHAIN_SUBMIT,
            fields={"cid": "bafk1", "signed_raw": b"raw", "tx_hash": "0x1", "account_nonce": 4},
            claim_submission=True,
        ),
        Change("a", 4.0, fields={"attempts": 1, "next_retry_at": 5.5, "error_message": "x"}),
        Change("a", 6.0, state=TxState.COMMITTED, via=TxState.TASK_COMPLETE),
        Change("a", 7.0, state=TxState.TRAINING, fields={"pow_nonce": None}),
    ]
    for change in changes:
        returned = await journal.apply(change)
        assert returned == await journal.get("a")
    assert returned.finished_at is None and returned.pow_nonce is None


async def test_history_rows_keep_their_order_however_many(journal: Journal) -> None:
    await journal.create(tx_id="a", spec=make_spec(1), miner=MINER, now=1.0, deadline=None)
    notes = [HistoryEntry("a", 2.0 + i, "note", message=f"n{i}") for i in range(9)]
    await journal.append_history(notes)
    history = await journal.history("a")
    assert [h.message for h in history[1:]] == [f"n{i}" for i in range(9)]
    assert history[1:] == notes


async def _at_upload(journal: Journal, tx: str, data: bytes, tmp_path: Path) -> Path:
    import hashlib

    await journal.create(tx_id=tx, spec=make_spec(len(data)), miner=MINER, now=1.0, deadline=None)
    await journal.apply(Change(tx, 2.0, state=TxState.TRAINING))
    path = tmp_path / "artifacts" / f"{tx}.safetensors"
    await journal.apply(
        Change(
            tx,
            3.0,
            state=TxState.IPFS_UPLOAD,
            expect=frozenset({TxState.TRAINING}),
            fields={"gradient_hash": hashlib.sha256(data).hexdigest(), "gradient_path": str(path)},
            artifact=(path, data),
        )
    )
    return path


async def test_a_small_gradient_is_a_row_a_big_one_a_file(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "g.db", inline_gradient_max=1024)
    await journal.open()
    try:
        small, big = b"s" * 1024, b"b" * 1025
        small_path = await _at_upload(journal, "small", small, tmp_path)
        big_path = await _at_upload(journal, "big", big, tmp_path)
        s, b = await journal.get("small"), await journal.get("big")
        assert s is not None and b is not None
        assert s.gradient_path is None and not small_path.exists()  # no file, no fsync
        assert b.gradient_path == str(big_path) and big_path.read_bytes() == big
        assert await journal.gradient(s) == small and await journal.gradient(b) == big
        assert await journal.has_gradient(s) and await journal.has_gradient(b)

        upload = frozenset({TxState.IPFS_UPLOAD})
        await journal.apply(Change("small", 4.0, state=TxState.ROLLED_BACK, expect=upload))
        assert not await journal.has_gradient(s)
        with pytest.raises(IntegrityError, match="gradient row of small is missing"):
            await journal.gradient(s)
        await journal.apply(Change("big", 4.0, state=TxState.ROLLED_BACK, expect=upload))
        await journal.settle()
        assert not big_path.exists() and await journal.stored_gradient(b) is None
    finally:
        await journal.close()


async def test_a_gradient_row_that_does_not_match_its_hash_is_refused(
    journal: Journal, tmp_path: Path
) -> None:
    await _at_upload(journal, "t", b"gradient", tmp_path)
    await journal.run(
        lambda conn: conn.execute(
            "UPDATE gradients SET data = ? WHERE transaction_id = 't'", (b"x",)
        )
    )
    rec = await journal.get("t")
    assert rec is not None
    with pytest.raises(IntegrityError, match="does not match its journaled hash"):
        await journal.gradient(rec)


async def test_a_refused_change_leaves_no_gradient_row(journal: Journal, tmp_path: Path) -> None:
    await journal.create(tx_id="t", spec=make_spec(1), miner=MINER, now=1.0, deadline=None)
    with pytest.raises(StaleStateError):  # still PENDING: a too-late training result
        await journal.apply(
            Change(
                "t",
                2.0,
                state=TxState.IPFS_UPLOAD,
                expect=frozenset({TxState.TRAINING}),
                artifact=(tmp_path / "t.safetensors", b"late"),
            )
        )
    rows = await journal.run(lambda conn: conn.execute("SELECT COUNT(*) FROM gradients").fetchone())
    assert rows == (0,)


def test_inline_gradient_max_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="inline_gradient_max = -1: accepted >= 0"):
        Journal(tmp_path / "x.db", inline_gradient_max=-1)


async def test_integrity_check_names_a_lost_or_leftover_gradient_row(
    journal: Journal, tmp_path: Path
) -> None:
    await _at_upload(journal, "t", b"gradient", tmp_path)
    assert await journal.integrity_check() == []
    await journal.run(lambda conn: conn.execute("DELETE FROM gradients"))
    assert any(
        "uploading or submitting without its gradient" in p and "t" in p
        for p in await journal.integrity_check()
    )
    await journal.run(lambda conn: conn.execute("INSERT INTO gradients VALUES ('t', x'00')"))
    await journal.run(
        lambda conn: conn.execute(
            "UPDATE transactions SET state = 'committed', finished_at = 4 WHERE id = 't'"
        )
    )
    assert any("gradient row kept for a committed" in p for p in await journal.integrity_check())
    await journal.run(
        lambda conn: conn.execute("UPDATE transactions SET state = 'rolled_back' WHERE id = 't'")
    )
    assert any(
        "or an undone one without an open dead" in p for p in await journal.integrity_check()
    )


@pytest.mark.parametrize("size", [16, 4096], ids=["row", "file"])
async def test_a_gradient_is_released_when_nobody_will_read_it_again(
    tmp_path: Path, size: int
) -> None:
    """Committed, or undone without an open dead letter: the row goes in that commit and
    the file just after it. An open dead letter keeps it (its retry uploads it again)."""
    journal = Journal(tmp_path / "r.db", inline_gradient_max=1024)
    await journal.open()
    try:
        await _at_upload(journal, "done", b"d" * size, tmp_path)  # round = size (make_spec)
        await _at_upload(journal, "undone", b"u" * (size + 1), tmp_path)
        await _at_upload(journal, "lettered", b"l" * (size + 2), tmp_path)
        upload = frozenset({TxState.IPFS_UPLOAD})
        await journal.apply(Change("done", 4.0, state=TxState.COMMITTED, expect=upload))
        await journal.apply(Change("undone", 4.0, state=TxState.ROLLED_BACK, expect=upload))
        letter = ("ipfs refused", "validation", {})
        await journal.apply(
            Change("lettered", 4.0, state=TxState.FAILED, expect=upload, dead_letter=letter)
        )
        await journal.settle()  # the file deletions run after the commit
        kept = {}
        for tx in ("done", "undone", "lettered"):
            rec = await journal.get(tx)
            assert rec is not None
            kept[tx] = await journal.has_gradient(rec)
        assert kept == {"done": False, "undone": False, "lettered": True}
        left = sorted(p.name for p in (tmp_path / "artifacts").glob("*"))
        assert left == ([] if size <= 1024 else ["lettered.safetensors"])
        # discarding the dead letter releases it, in the same commit
        (dl,) = await journal.dead_letters()
        await journal.resolve_dead_letter(dl.id, status="discarded", now=5.0)
        await journal.settle()
        rec = await journal.get("lettered")
        assert rec is not None and not await journal.has_gradient(rec)
        assert list((tmp_path / "artifacts").glob("*")) == []
        assert not [p for p in await journal.integrity_check() if "gradient" in p]
    finally:
        await journal.close()
