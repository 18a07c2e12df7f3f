"""The saga end to end against failing fakes: commit, rollback with real unpin, retries."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
from pathlib import Path
from typing import Any

import pytest

from r3mes_desktop.core.errors import (
    AlreadySubmittedError,
    AuthenticationError,
    NetworkError,
    PermanentError,
    ResourceError,
    ValidationError,
)
from r3mes_desktop.core.events import Notice, TransactionStateChanged
from r3mes_desktop.core.steps import SignedSubmission
from tests.helpers.coordinator_rig import Rig, make_rig
from tests.helpers.fakes import make_spec


async def test_happy_path_commits_with_every_artifact(rig: Rig) -> None:
    status = await rig.coordinator.run_transaction(make_spec(1))

    assert status.state == "committed"
    assert status.progress == {
        "fetch": True,  # nothing to fetch on the base model: done once past PENDING
        "training": True,
        "ipfs_upload": True,
        "blockchain_submit": True,
        "task_complete": True,
    }
    assert status.failed_step is None and status.error_message is None
    assert status.cid in rig.store.pins
    assert rig.chain.submissions[1].cid == status.cid
    assert rig.task_api.completed == [1]
    transitions = [
        (h.get("old_state"), h["new_state"]) for h in status.history if h["kind"] == "transition"
    ]
    assert transitions == [
        (None, "pending"),
        ("pending", "training"),
        ("training", "ipfs_upload"),
        ("ipfs_upload", "blockchain_submit"),
        ("blockchain_submit", "task_complete"),
        ("task_complete", "committed"),
    ]
    rec = await rig.coordinator.journal.get(status.transaction_id)
    assert rec is not None and rec.signed_raw == rig.chain.signed[0].raw
    assert rec.tx_hash == rig.chain.signed[0].tx_hash
    assert rec.pow_nonce is not None and rec.gradient_hash is not None
    assert rig.trainer.discarded == [status.transaction_id]
    await rig.coordinator.journal.settle()  # the gradient is deleted once COMMITTED is on disk
    assert not (rig.tmp / "artifacts" / f"{status.transaction_id}.safetensors").exists()
    assert not await rig.coordinator.journal.has_gradient(rec)
    states = [e.new_state for e in rig.of_kind(TransactionStateChanged)]
    assert states == [
        "pending",
        "training",
        "ipfs_upload",
        "blockchain_submit",
        "task_complete",
        "committed",
    ]
    assert await rig.coordinator.journal.integrity_check() == []


async def test_ipfs_failure_rolls_back_and_nothing_stays_pinned(rig: Rig) -> None:
    rig.faults.fail("add_and_pin", NetworkError("connection refused"), times=None)
    rig.faults.fail("unpin", NetworkError("connection refused"), times=None)

    status = await rig.coordinator.run_transaction(make_spec(2))

    # Nothing answered, so nothing shows whether an add pinned before its answer was lost:
    # the undo (unpin the CID journaled before the first add) is pending, not claimed done.
    assert status.state == "compensating"
    assert status.failed_step == "ipfs_upload"
    assert status.error_category == "network"
    assert rig.chain.signed == []
    assert rig.faults.count("add_and_pin") == 4  # 1 + max_retries (3); no re-add to learn
    rows = await rig.coordinator.journal.compensations(tx_id=status.transaction_id)
    assert [(r.action, r.target) for r in rows] == [("unpin", status.cid)]

    rig.faults.clear()
    rig.clock.advance(60)
    assert await rig.coordinator.retry_compensations() == 1
    status = await rig.coordinator.status(status.transaction_id)
    assert status.state == "rolled_back"
    assert status.error_message == "connection refused"  # the original error is kept
    assert rig.store.pins == set()


async def test_ipfs_refusing_every_connection_rolls_back_at_once(rig: Rig) -> None:
    """A refused connection never reached the daemon: nothing can be pinned, so there is
    nothing to learn or undo (a stopped IPFS daemon gives a plain rollback)."""
    refused = ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
    rig.faults.fail("add_and_pin", refused, times=None)

    status = await rig.coordinator.run_transaction(make_spec(6))

    assert status.state == "rolled_back"
    assert status.failed_step == "ipfs_upload"
    assert status.compensation is None
    assert rig.faults.count("add_and_pin") == 4  # 1 + max_retries (3), no re-add
    assert rig.store.pins == set()


async def test_upload_pinned_but_unanswered_with_the_breaker_open_leaves_no_orphan(
    rig: Rig,
) -> None:
    """Found by bench.chaos (an orphan pin): every add pinned but its answer was lost, and
    the re-add that names the CID for the undo was refused too (ipfs breaker open). The
    transaction must not close ROLLED_BACK with the content still pinned."""
    real_add = rig.store.add_and_pin
    lost = [4]  # 1 + 3 retries
    rig.faults.fail("unpin", NetworkError("connection refused"), times=None)  # daemon gone

    async def add_then_lose_the_answer(data: bytes) -> str:
        cid = await real_add(data)
        if lost[0]:
            lost[0] -= 1
            raise NetworkError("read timed out")
        return cid

    rig.store.add_and_pin = add_then_lose_the_answer  # type: ignore[method-assign]
    status = await rig.coordinator.run_transaction(make_spec(7))
    assert status.state == "compensating" and status.compensation == "pending"
    assert len(rig.store.pins) == 1  # pinned, and the journal knows it must undo it
    rows = await rig.coordinator.journal.compensations(tx_id=status.transaction_id)
    assert [r.action for r in rows] == ["unpin"]  # the CID was journaled before the add

    rig.faults.clear()
    rig.clock.advance(60)
    assert await rig.coordinator.retry_compensations() == 1
    after = await rig.coordinator.status(status.transaction_id)
    assert after.state == "rolled_back"
    assert rig.store.pins == set()
    assert await rig.coordinator.journal.integrity_check() == []


async def test_chain_auth_failure_unpins_and_rolls_back(rig: Rig) -> None:
    rig.faults.fail("broadcast", AuthenticationError("insufficient funds"), times=None)

    status = await rig.coordinator.run_transaction(make_spec(3))

    assert status.state == "rolled_back"
    assert status.failed_step == "blockchain_submit"
    assert status.error_category == "authentication"
    assert status.error_message == "insufficient funds"
    assert rig.faults.count("broadcast") == 1  # auth errors are not retried
    assert rig.store.pins == set()
    assert [c for c in rig.faults.calls if c[0] == "unpin"] == [("unpin", {"cid": status.cid})]
    letters = await rig.coordinator.dead_letters()
    assert [(d.transaction_id, d.category) for d in letters] == [
        (status.transaction_id, "authentication")
    ]
    rec = await rig.coordinator.journal.get(status.transaction_id)
    assert rec is not None and await rig.coordinator.journal.has_gradient(rec)  # to retry


async def test_auth_error_reading_the_receipt_of_a_sent_submission_commits(rig: Rig) -> None:
    """Sent, then the node refuses the receipt read (HTTP 401): the chain holds our
    submission, so undoing it would unpin content a mined submission points at (an on-chain
    submission without a COMMITTED transaction)."""
    rig.faults.fail("wait_receipt", AuthenticationError("HTTP 401 on the receipt"), times=None)

    status = await rig.coordinator.run_transaction(make_spec(5))

    assert status.state == "committed"
    assert rig.chain.submissions[5].cid == status.cid
    assert rig.store.pins == {status.cid}
    assert [c for c in rig.faults.calls if c[0] == "unpin"] == []


async def test_chain_validation_revert_unpins_and_rolls_back(rig: Rig) -> None:
    rig.faults.fail("wait_receipt", ValidationError("bad proof of work"), times=1)

    status = await rig.coordinator.run_transaction(make_spec(4))

    assert status.state == "rolled_back"
    assert status.error_category == "validation"
    assert rig.store.pins == set()
    assert await rig.coordinator.dead_letters() == []  # retrying the same proof cannot help
    if rig.inline_gradient_max:  # so nothing will upload its gradient again: the row goes
        rec = await rig.coordinator.journal.get(status.transaction_id)
        assert rec is not None and not await rig.coordinator.journal.has_gradient(rec)


async def test_network_retries_wait_the_configured_delays(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, retry_initial_delay=2.0, retry_backoff_factor=3.0, max_retries=3)
    await rig.coordinator.start(background=False)
    rig.faults.fail("add_and_pin", NetworkError("503 service unavailable"), times=2)
    rig.faults.fail("broadcast", NetworkError("connection reset"), times=1)

    status = await rig.coordinator.run_transaction(make_spec(5))

    assert status.state == "committed"
    assert rig.clock.sleeps == [2.0, 6.0, 2.0]
    retries = [h for h in status.history if h["kind"] == "retry"]
    assert [(h["step"], h["attempt"], h["delay"], h["category"]) for h in retries] == [
        ("add_and_pin", 1, 2.0, "network"),
        ("add_and_pin", 2, 6.0, "network"),
        ("broadcast", 1, 2.0, "network"),
    ]
    await rig.coordinator.close()


async def test_training_resource_error_is_retried_then_fails_without_compensation(
    rig: Rig,
) -> None:
    rig.faults.fail("train", ResourceError("CUDA error: out of memory"), times=None)

    status = await rig.coordinator.run_transaction(make_spec(6))

    assert status.state == "failed"
    assert status.failed_step == "training"
    assert status.error_category == "resource"
    assert rig.faults.count("train") == 4
    assert rig.faults.count("unpin") == 0
    assert rig.trainer.discarded == []  # the checkpoint is kept for resume
    resumable = await rig.coordinator.resumable()
    assert [r["transaction_id"] for r in resumable] == [status.transaction_id]
    assert resumable[0]["step"] == 2


async def test_task_complete_failure_commits_and_the_outbox_delivers_later(rig: Rig) -> None:
    rig.faults.fail("complete_task", NetworkError("timed out"), times=9)

    status = await rig.coordinator.run_transaction(make_spec(7))

    assert status.state == "committed"
    assert rig.task_api.completed == []
    notices = rig.of_kind(Notice)
    assert len(notices) == 1 and notices[0].level == "warning"
    assert (await rig.coordinator.statistics())["pending_task_completions"] == 1
    # 1 quick try + 4 in the step failed; 4 more: the first outbox round fails, backs off
    assert await rig.coordinator.deliver_outbox() == 0
    assert await rig.coordinator.deliver_outbox() == 0  # not due yet
    rig.clock.advance(120)
    assert await rig.coordinator.deliver_outbox() == 1
    assert rig.task_api.completed == [7]
    assert (await rig.coordinator.statistics())["pending_task_completions"] == 0


async def test_outbox_survives_restart(rig: Rig) -> None:
    rig.faults.fail("complete_task", NetworkError("timed out"), times=None)
    status = await rig.coordinator.run_transaction(make_spec(8))
    assert status.state == "committed"

    rig.faults.clear("complete_task")
    coordinator = await rig.reopen()
    await coordinator.start(background=False)
    assert await coordinator.deliver_outbox() == 1
    assert rig.task_api.completed == [8]


async def test_already_submitted_with_our_cid_is_success(rig: Rig) -> None:
    rig.faults.fail("broadcast", AlreadySubmittedError("dup", stored_cid=None), times=0)
    spec = make_spec(9)
    # the chain already holds exactly our submission (e.g. mined from an earlier broadcast)
    from tests.helpers.fakes import cid_for, gradient_for

    our_cid = cid_for(gradient_for(spec))
    rig.faults.fail("wait_receipt", AlreadySubmittedError("dup", stored_cid=our_cid), times=1)

    status = await rig.coordinator.run_transaction(spec)

    assert status.state == "committed"
    assert our_cid in rig.store.pins


async def test_already_submitted_with_another_cid_rolls_back(rig: Rig) -> None:
    rig.faults.fail("wait_receipt", AlreadySubmittedError("dup", stored_cid="bafkother"), times=1)

    status = await rig.coordinator.run_transaction(make_spec(10))

    assert status.state == "rolled_back"
    assert rig.store.pins == set()


async def test_second_transaction_for_a_committed_round_is_refused(rig: Rig) -> None:
    await rig.coordinator.run_transaction(make_spec(11))
    with pytest.raises(ValidationError, match="round 11"):
        await rig.coordinator.run_transaction(make_spec(11))
    assert len(rig.chain.signed) == 1


async def test_timeout_rolls_back_a_slow_transaction(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, transaction_timeout=60)
    rig.trainer.duration_s = 30
    await rig.coordinator.start(background=False)
    rig.faults.fail("add_and_pin", NetworkError("timed out"), times=3)  # waits 1+2+4 s

    ok = await rig.coordinator.run_transaction(make_spec(12))
    assert ok.state == "committed"

    rig.trainer.duration_s = 61
    late = await rig.coordinator.run_transaction(make_spec(13))
    assert late.state == "failed"
    assert late.failed_step == "training"
    assert "R3MES_TRANSACTION_TIMEOUT" in (late.error_message or "")
    assert late.error_category == "resource"  # our own deadline, not the network
    assert rig.chain.submissions.keys() == {12}
    await rig.coordinator.close()


async def test_timeout_during_upload_unpins(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, transaction_timeout=60, retry_initial_delay=20, max_retries=5)
    await rig.coordinator.start(background=False)
    rig.faults.fail("sign_submission", NetworkError("timed out"), times=None)

    status = await rig.coordinator.run_transaction(make_spec(14))

    assert status.state == "rolled_back"
    assert status.failed_step == "blockchain_submit"
    assert rig.store.pins == set()
    await rig.coordinator.close()


async def park_a_mined_submission(tmp_path: Path, round_id: int) -> tuple[Rig, Any]:
    """The broadcast reached the node and was mined, but every answer was lost: parked."""
    rig = make_rig(tmp_path, max_retries=1)
    await rig.coordinator.start(background=False)
    real_broadcast = rig.chain.broadcast

    async def mined_but_answer_lost(signed: SignedSubmission) -> None:
        await real_broadcast(signed)
        raise NetworkError("connection reset by peer")

    rig.chain.broadcast = mined_but_answer_lost  # type: ignore[method-assign]
    for op in ("receipt", "submission_of"):
        rig.faults.fail(op, NetworkError("connection refused"), times=None)
    status = await rig.coordinator.run_transaction(make_spec(round_id))
    rig.faults.clear()
    rig.chain.broadcast = real_broadcast  # type: ignore[method-assign]
    return rig, status


async def test_submission_in_doubt_is_parked_not_unpinned_then_settled(tmp_path: Path) -> None:
    # The broadcast reached the node and was mined, but every answer was lost and the chain
    # stayed unreachable: undoing now would orphan a mined submission (lost work).
    rig, status = await park_a_mined_submission(tmp_path, 21)

    assert status.state == "blockchain_submit"
    assert status.error_category == "network"
    assert status.next_retry_at is not None
    assert len(rig.store.pins) == 1  # nothing undone while the chain has not answered
    assert await rig.coordinator.settle_in_doubt() == 0  # not due yet

    rig.clock.advance(status.next_retry_at - rig.clock.time() + 1)
    assert await rig.coordinator.settle_in_doubt() == 1

    status = await rig.coordinator.status(status.transaction_id)
    assert status.state == "committed"
    assert len(rig.chain.submissions) == 1  # the same bytes: no second submission
    assert len({s.tx_hash for s in rig.chain.signed}) == 1
    await rig.coordinator.close()


async def test_submission_refused_after_doubt_is_rolled_back(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, max_retries=1)
    await rig.coordinator.start(background=False)
    rig.faults.fail("broadcast", NetworkError("connection refused"), times=None)
    status = await rig.coordinator.run_transaction(make_spec(22))
    assert status.state == "blockchain_submit"

    rig.faults.clear()
    rig.faults.fail("broadcast", PermanentError("nonce consumed by another transaction"))
    rig.clock.advance(status.next_retry_at - rig.clock.time() + 1)
    await rig.coordinator.settle_in_doubt()

    status = await rig.coordinator.status(status.transaction_id)
    assert status.state == "rolled_back"
    assert rig.store.pins == set()
    assert rig.chain.submissions == {}
    await rig.coordinator.close()


async def test_failed_lookup_of_a_parked_submission_keeps_it_in_doubt(tmp_path: Path) -> None:
    # Found by bench.chaos: re-driving a parked submission, the receipt read answered 401.
    # A failed read is no answer from the chain; the mined submission must not be undone.
    rig, status = await park_a_mined_submission(tmp_path, 23)
    assert status.state == "blockchain_submit"

    rig.faults.fail("receipt", AuthenticationError("HTTP 401 unauthorized"), times=None)
    rig.clock.advance(status.next_retry_at - rig.clock.time() + 1)
    await rig.coordinator.settle_in_doubt()
    status = await rig.coordinator.status(status.transaction_id)
    assert status.state == "blockchain_submit"  # still in doubt, nothing undone
    assert len(rig.store.pins) == 1

    rig.faults.clear()
    rig.clock.advance(status.next_retry_at - rig.clock.time() + 1)
    await rig.coordinator.settle_in_doubt()
    status = await rig.coordinator.status(status.transaction_id)
    assert status.state == "committed"
    assert len(rig.chain.submissions) == 1
    await rig.coordinator.close()


async def test_a_parked_submission_finished_by_another_driver_is_not_driven_again(
    tmp_path: Path,
) -> None:
    # Found by bench.chaos (an orphan pin): at a restart, recovery and the first maintenance
    # pass both picked the same parked submission while waiting for a bulkhead slot; the
    # second to get one drove its stale copy of a transaction the first had rolled back,
    # redoing effects before its commit was refused. A driver now drives what the journal
    # holds when its slot comes.
    rig = make_rig(tmp_path, max_retries=1, max_active_transactions=1)
    await rig.coordinator.start(background=False)
    rig.faults.fail("broadcast", NetworkError("connection refused"), times=None)
    status = await rig.coordinator.run_transaction(make_spec(24))
    assert status.state == "blockchain_submit"
    rig.faults.clear()
    rig.faults.fail("broadcast", PermanentError("nonce consumed by another transaction"))
    rig.clock.advance(status.next_retry_at - rig.clock.time() + 1)

    coordinator = await rig.reopen()
    slot = coordinator.bulkhead.slot()
    await slot.__aenter__()  # a running round holds the only slot
    await coordinator.start(background=False)  # recovery waits for the slot
    settling = asyncio.ensure_future(coordinator.settle_in_doubt())  # so does maintenance

    async def both_waiting() -> None:  # the journal read runs off the loop: not a tick
        while coordinator.bulkhead.waiting < 2:  # noqa: ASYNC110 - no event to wait on
            await asyncio.sleep(0.01)

    await asyncio.wait_for(both_waiting(), 10)
    await slot.__aexit__(None, None, None)
    await settling  # no StaleStateError: the second driver saw it finished
    await coordinator.wait_idle()

    status = await coordinator.status(status.transaction_id)
    assert status.state == "rolled_back"
    assert rig.store.pins == set()  # nothing re-uploaded after the undo
    assert rig.chain.submissions == {}
    assert await coordinator.journal.integrity_check() == []
    await coordinator.close()


async def test_our_own_deadline_past_the_pivot_is_doubt_not_an_undo(rig: Rig) -> None:
    """The transaction deadline is our limit, counted as a resource failure; past the
    signature it still settles nothing (only the chain can), so it parks, never unpins."""
    from r3mes_desktop.core.errors import DeadlineExceededError
    from r3mes_desktop.core.saga.settlement import Settlement
    from r3mes_desktop.core.txstate import TxState

    status = await rig.coordinator.run_transaction(make_spec(41))
    rec = await rig.coordinator.journal.get(status.transaction_id)
    assert rec is not None
    deadline = DeadlineExceededError("transaction exceeded R3MES_TRANSACTION_TIMEOUT (300s)")
    assert deadline.category == "resource"
    submitting = dataclasses.replace(rec, state=TxState.BLOCKCHAIN_SUBMIT)
    assert Settlement.in_doubt(submitting, deadline)
    uploading = dataclasses.replace(rec, state=TxState.IPFS_UPLOAD, signed_raw=None)
    assert not Settlement.in_doubt(uploading, deadline)
