"""Cleanup, compensation retries, dead letters, resume, statistics and analytics."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from r3mes_desktop.core.errors import (
    AuthenticationError,
    NetworkError,
    PermanentError,
    ValidationError,
)
from r3mes_desktop.core.events import CompensationDone, CompensationFailed
from r3mes_desktop.core.journal import Change
from r3mes_desktop.core.txstate import TxState
from tests.helpers.coordinator_rig import Rig, build_coordinator, make_rig
from tests.helpers.fakes import BlockingTrainer, make_spec


async def test_failed_unpin_stays_compensating_and_is_retried_later(rig: Rig) -> None:
    rig.faults.fail("broadcast", AuthenticationError("invalid signature"), times=1)
    rig.faults.fail("unpin", NetworkError("connection refused"), times=4)  # one full call

    status = await rig.coordinator.run_transaction(make_spec(1))

    assert status.state == "compensating"  # never shown as rolled back
    assert status.compensation == "pending"
    assert status.error_category == "authentication"  # the original error is kept
    assert status.error_message == "invalid signature"
    assert status.cid in rig.store.pins
    assert len(rig.of_kind(CompensationFailed)) == 1
    assert [h["kind"] for h in status.history].count("compensation_failed") == 1

    assert await rig.coordinator.retry_compensations() == 0  # not due yet
    rig.clock.advance(60)
    assert await rig.coordinator.retry_compensations() == 1
    after = await rig.coordinator.status(status.transaction_id)
    assert after.state == "rolled_back"
    assert after.error_message == "invalid signature"
    assert rig.store.pins == set()
    assert len(rig.of_kind(CompensationDone)) == 1
    assert await rig.coordinator.journal.integrity_check() == []


async def test_pending_compensation_is_retried_after_restart(rig: Rig) -> None:
    rig.faults.fail("broadcast", AuthenticationError("invalid signature"), times=1)
    rig.faults.fail("unpin", NetworkError("connection refused"), times=4)
    status = await rig.coordinator.run_transaction(make_spec(2))
    assert status.state == "compensating"

    coordinator = await rig.reopen()
    report = await coordinator.start(background=False)
    assert [r["state"] for r in report.reconciled] == ["compensating"]
    await coordinator.wait_idle()
    assert (await coordinator.status(status.transaction_id)).state == "rolled_back"
    assert rig.store.pins == set()


async def _stuck_in(rig: Rig, state: TxState, round_id: int) -> str:
    """Journal a transaction that stopped in `state` (as if the process had died)."""
    journal = rig.coordinator.journal
    spec = make_spec(round_id)
    now = rig.clock.time()
    rec = await journal.create(
        tx_id=f"stuck-{round_id}",
        spec=spec,
        miner=rig.chain.miner_address,
        now=now,
        deadline=now + 300,
    )
    path = rig.tmp / "artifacts" / f"{rec.id}.safetensors"
    from r3mes_desktop.core.artifacts import write_atomic_sync
    from tests.helpers.fakes import gradient_for

    data = gradient_for(spec)
    write_atomic_sync(path, data)
    import hashlib

    fields: dict[str, object] = {}
    if state is not TxState.TRAINING:
        fields = {
            "gradient_hash": hashlib.sha256(data).hexdigest(),
            "gradient_path": str(path),
            "pow_nonce": 7,
        }
    await journal.apply(Change(rec.id, now, state=TxState.TRAINING))
    if state is not TxState.TRAINING:
        await journal.apply(Change(rec.id, now, state=TxState.IPFS_UPLOAD, fields=fields))
    return rec.id


async def test_stale_cleanup_closes_old_transactions_and_reports(rig: Rig) -> None:
    old_training = await _stuck_in(rig, TxState.TRAINING, 10)
    old_upload = await _stuck_in(rig, TxState.IPFS_UPLOAD, 11)
    # the upload pinned before the "crash": cleanup must find and unpin it
    from tests.helpers.fakes import cid_for, gradient_for

    rig.store.pins.add(cid_for(gradient_for(make_spec(11))))
    rig.clock.advance(700)
    fresh = await _stuck_in(rig, TxState.TRAINING, 12)

    report = await rig.coordinator.cleanup_stale()

    assert report.older_than_s == 600
    assert report.count == 2
    assert set(report.transactions) == {old_training, old_upload}
    assert report.actions == {"failed": 1, "rolled_back": 1}
    assert report.unpinned == [cid_for(gradient_for(make_spec(11)))]
    assert rig.store.pins == set()
    assert (await rig.coordinator.status(fresh)).state == "training"
    failed = await rig.coordinator.status(old_training)
    assert failed.state == "failed" and "stale" in (failed.error_message or "")
    assert failed.error_category is None  # a cleanup is not an error occurrence

    again = await rig.coordinator.cleanup_stale(older_than_s=0)
    assert again.transactions == [fresh]


async def test_lost_broadcast_answer_is_reconciled_not_unpinned(rig: Rig) -> None:
    rig.faults.fail("wait_receipt", NetworkError("timed out"), times=None)

    status = await rig.coordinator.run_transaction(make_spec(13))

    # the broadcast was mined but we never heard back: the receipt lookup finds it
    assert status.state == "committed"
    assert status.cid in rig.store.pins
    notes = [h["message"] for h in status.history if h["kind"] == "note"]
    assert notes == ["found on chain after network errors"]


async def test_stale_cleanup_commits_what_the_chain_already_has(rig: Rig) -> None:
    tx_id = await _stuck_in(rig, TxState.IPFS_UPLOAD, 15)
    rec = await rig.coordinator.journal.get(tx_id)
    assert rec is not None and rec.gradient_hash is not None
    from tests.helpers.fakes import cid_for, gradient_for

    cid = await rig.store.add_and_pin(gradient_for(make_spec(15)))
    assert cid == cid_for(gradient_for(make_spec(15)))
    signed = await rig.chain.sign_submission(
        round_id=15, cid=cid, gradient_hash=bytes.fromhex(rec.gradient_hash), pow_nonce=7
    )
    await rig.coordinator.journal.apply(
        Change(
            tx_id,
            rig.clock.time(),
            state=TxState.BLOCKCHAIN_SUBMIT,
            fields={
                "cid": cid,
                "signed_raw": signed.raw,
                "tx_hash": signed.tx_hash,
                "account_nonce": signed.account_nonce,
            },
            claim_submission=True,
        )
    )
    await rig.chain.broadcast(signed)  # ... and the process died before the receipt
    rig.clock.advance(601)

    report = await rig.coordinator.cleanup_stale()

    assert report.cleaned[0]["action"] == "found on chain: committed, task completion queued"
    assert report.actions == {"committed": 1}
    assert cid in rig.store.pins
    assert await rig.coordinator.deliver_outbox() == 1
    assert rig.task_api.completed == [15]


async def test_force_cleanup_of_a_running_transaction(rig: Rig) -> None:
    import asyncio

    gate, pinned = asyncio.Event(), asyncio.Event()
    original = rig.store.add_and_pin

    async def hanging_add(data: bytes) -> str:
        cid = await original(data)
        pinned.set()
        await gate.wait()  # pinned, then hangs before answering
        return cid

    rig.store.add_and_pin = hanging_add  # type: ignore[method-assign]
    task = asyncio.create_task(rig.coordinator.run_transaction(make_spec(14)))
    await asyncio.wait_for(pinned.wait(), timeout=30)
    running = await rig.coordinator.list_transactions(states=["ipfs_upload"])
    tx_id = running[0].transaction_id
    rig.store.add_and_pin = original  # type: ignore[method-assign]

    report = await rig.coordinator.force_cleanup(tx_id)

    assert report.count == 1
    assert report.cleaned[0]["old_state"] == "ipfs_upload"
    assert report.cleaned[0]["new_state"] == "rolled_back"
    assert rig.store.pins == set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (await rig.coordinator.force_cleanup(tx_id)).count == 0  # already terminal


async def test_dead_letter_retry_rebroadcasts_the_same_signed_bytes(rig: Rig) -> None:
    rig.faults.fail("broadcast", AuthenticationError("insufficient funds"), times=1)
    status = await rig.coordinator.run_transaction(make_spec(20))
    assert status.state == "rolled_back"
    [letter] = await rig.coordinator.dead_letters()
    assert letter.payload["tx_hash"] == status.tx_hash

    retried = await rig.coordinator.retry_dead_letter(letter.id)

    assert retried.state == "committed"
    assert retried.attempts == 1
    assert len(rig.chain.signed) == 1  # never signed twice
    assert rig.chain.broadcasts == [status.tx_hash]
    assert status.cid in rig.store.pins  # re-pinned after the rollback's unpin
    assert await rig.coordinator.dead_letters() == []
    with pytest.raises(ValidationError, match="dead letter"):
        await rig.coordinator.retry_dead_letter(letter.id)


async def test_dead_letter_discard(rig: Rig) -> None:
    rig.faults.fail("add_and_pin", PermanentError("model missing"), times=1)
    status = await rig.coordinator.run_transaction(make_spec(21))
    assert status.state == "rolled_back"
    [letter] = await rig.coordinator.dead_letters()
    assert letter.category == "permanent"
    rec = await rig.coordinator.journal.get(status.transaction_id)
    assert rec is not None and await rig.coordinator.journal.has_gradient(rec)
    assert (letter.payload["gradient_path"] is None) == (rig.inline_gradient_max > 0)

    await rig.coordinator.discard_dead_letter(letter.id)

    assert await rig.coordinator.dead_letters() == []
    assert not await rig.coordinator.journal.has_gradient(rec)
    assert not (rig.tmp / "artifacts" / f"{rec.id}.safetensors").exists()
    assert status.transaction_id in rig.trainer.discarded


async def test_resume_a_failed_training(rig: Rig) -> None:
    rig.faults.fail("train", ValidationError("nan loss"), times=1)
    status = await rig.coordinator.run_transaction(make_spec(22))
    assert status.state == "failed"
    [item] = await rig.coordinator.resumable()

    resumed = await rig.coordinator.resume(item)

    assert resumed.state == "committed"
    assert await rig.coordinator.resumable() == []


async def test_statistics_are_exact_and_survive_reopen(rig: Rig) -> None:
    first_created = rig.clock.time() + 10
    for round_id in (1, 2, 3):
        rig.clock.advance(10)
        await rig.coordinator.run_transaction(make_spec(round_id))
    rig.faults.fail("add_and_pin", NetworkError("connection refused"), times=None)
    await rig.coordinator.run_transaction(make_spec(4))  # 4 network errors
    rig.faults.clear()
    rig.clock.advance(60)
    # the CID was journaled before the add, so the unpin ran at once (no add to learn it)
    assert await rig.coordinator.retry_compensations() == 0
    rig.faults.fail("train", ValidationError("bad data"), times=1)
    await rig.coordinator.run_transaction(make_spec(5))  # failed

    stats = await rig.coordinator.statistics()

    assert stats["total_transactions"] == 5
    assert stats["committed_transactions"] == 3
    assert stats["failed_transactions"] == 2
    assert stats["rolled_back_transactions"] == 1
    assert stats["success_rate"] == pytest.approx(0.6)
    assert stats["failure_rate"] == pytest.approx(0.4)
    assert stats["rollback_rate"] == pytest.approx(0.2)
    covered = rig.clock.time() - first_created  # the journal is younger than the 1 h window
    assert stats["throughput_covered_s"] == pytest.approx(covered)
    assert stats["transactions_per_minute"] == pytest.approx(3 * 60 / covered)
    assert stats["commit_time_mean_s"] == 0.0  # instant fakes, no waits
    assert stats["error_breakdown"] == {
        "network_errors": 4,  # 3 retries + the final failure
        "resource_errors": 0,
        "authentication_errors": 0,
        "validation_errors": 1,
        "permanent_errors": 0,
        "unknown_errors": 0,
    }
    coordinator = await rig.reopen()
    await coordinator.start(background=False)
    assert await coordinator.statistics() == stats


async def test_commit_time_percentiles(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    await rig.coordinator.start(background=False)
    for round_id, seconds in enumerate([10, 20, 30, 40], start=1):
        rig.trainer.duration_s = seconds
        await rig.coordinator.run_transaction(make_spec(round_id))
    stats = await rig.coordinator.statistics()
    assert stats["commit_time_mean_s"] == pytest.approx(25.0)
    assert stats["commit_time_p50_s"] == pytest.approx(20.0)
    assert stats["commit_time_p95_s"] == pytest.approx(40.0)
    await rig.coordinator.close()


async def test_error_analysis_findings(rig: Rig) -> None:
    assert (await rig.coordinator.error_analysis())["findings"] == []
    rig.faults.fail("broadcast", AuthenticationError("insufficient funds"), times=None)
    for round_id in range(1, 5):
        await rig.coordinator.run_transaction(make_spec(round_id))

    analysis = await rig.coordinator.error_analysis()

    kinds = {f["kind"]: f for f in analysis["findings"]}
    assert analysis["error_rate"] == 1.0
    assert kinds["error_rate"]["category"] == "authentication"
    assert "wallet" in kinds["error_rate"]["recommendation"]
    assert kinds["repeating"]["count"] == 4
    assert "spike" not in kinds  # 4 errors are below the spike minimum


async def test_bad_arguments_name_the_field(rig: Rig) -> None:
    with pytest.raises(ValidationError, match="window_s"):
        await rig.coordinator.statistics(window_s=0)
    with pytest.raises(ValidationError, match="limit"):
        await rig.coordinator.list_transactions(limit=0)
    with pytest.raises(ValidationError, match="transaction_id"):
        await rig.coordinator.status("nope")


async def test_background_maintenance_delivers_and_undoes_on_its_own(tmp_path: Path) -> None:
    import asyncio

    from r3mes_desktop.core.events import StatsChanged

    rig = make_rig(tmp_path)
    await rig.coordinator.start(background=False)
    rig.faults.fail("complete_task", NetworkError("timed out"), times=5)  # the quick try + 4
    committed = await rig.coordinator.run_transaction(make_spec(1))
    rig.faults.fail("broadcast", AuthenticationError("invalid signature"), times=1)
    rig.faults.fail("unpin", NetworkError("connection refused"), times=4)
    undoing = await rig.coordinator.run_transaction(make_spec(2))
    assert (committed.state, undoing.state) == ("committed", "compensating")
    coordinator = await rig.reopen()

    await coordinator.start()  # background loops on the ManualClock: no real waiting
    for _ in range(500):
        if rig.task_api.completed and not rig.store.pins:
            break
        await asyncio.sleep(0.002)
    await coordinator.close()

    assert rig.task_api.completed == [1]
    assert rig.store.pins == {committed.cid}
    assert rig.of_kind(StatsChanged)  # published after transactions end


async def test_stale_cleanup_holds_off_the_recovery_of_the_same_transaction(
    tmp_path: Path,
) -> None:
    first = make_rig(tmp_path)
    await first.coordinator.start(background=False)
    rec = await first.coordinator.journal.create(
        tx_id="mining_tx_stuck",
        spec=make_spec(9),
        miner=first.coordinator.saga.miner,
        now=first.clock.time(),
        deadline=None,
    )
    await first.coordinator.close()

    rig = make_rig(tmp_path)
    rig.trainer = BlockingTrainer()  # type: ignore[assignment]
    rig.coordinator = build_coordinator(rig)
    rig.clock.advance(3600)
    await rig.coordinator.start(background=False)  # recovery queues a driver for it
    try:
        # the cleanup starts before that driver runs: it must not drive the transaction
        # between the cleanup's read and its close (that close then met "is training")
        report = await rig.coordinator.cleanup_stale(older_than_s=600)
        assert report.transactions == [rec.id]
        for _ in range(5):  # let the queued driver run, if it still would
            await asyncio.sleep(0)
        status = await rig.coordinator.status(rec.id)
        assert status.state == "failed" and "stale" in (status.error_message or "")
    finally:
        await rig.coordinator.close()
