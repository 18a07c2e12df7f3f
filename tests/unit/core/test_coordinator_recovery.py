"""Recovery at start: each unfinished state is reconciled with the world, never redone blindly."""

from __future__ import annotations

import hashlib

from r3mes_desktop.core.errors import PermanentError
from r3mes_desktop.core.journal import Change
from r3mes_desktop.core.txstate import TxState
from tests.helpers.coordinator_rig import Rig
from tests.helpers.fakes import cid_for, gradient_for, make_spec


async def crashed_at(
    rig: Rig,
    state: TxState,
    *,
    round_id: int = 1,
    pinned: bool = False,
    journal_cid: bool = False,
    broadcast: bool = False,
) -> str:
    """Journal a transaction exactly as a process killed in `state` leaves it."""
    journal = rig.coordinator.journal
    spec = make_spec(round_id)
    now = rig.clock.time()
    rec = await journal.create(
        tx_id=f"tx-{round_id}",
        spec=spec,
        miner=rig.chain.miner_address,
        now=now,
        deadline=now + 300,
    )
    await journal.apply(Change(rec.id, now, state=TxState.TRAINING))
    if state is TxState.TRAINING:
        return rec.id
    data = gradient_for(spec)
    path = rig.tmp / "artifacts" / f"{rec.id}.safetensors"
    await journal.apply(  # as the saga does: the journal keeps the bytes (a row or a file)
        Change(
            rec.id,
            now,
            state=TxState.IPFS_UPLOAD,
            fields={
                "gradient_hash": hashlib.sha256(data).hexdigest(),
                "gradient_path": str(path),
                "pow_nonce": 42,
            },
            artifact=(path, data),
        )
    )
    cid = cid_for(data)
    if journal_cid:  # the look before the first add: CID and "not pinned before", journaled
        await journal.apply(Change(rec.id, now, fields={"cid": cid, "pinned_before": False}))
    if pinned:
        await rig.store.add_and_pin(data)
    if state is TxState.IPFS_UPLOAD:
        return rec.id
    signed = await rig.chain.sign_submission(
        round_id=round_id, cid=cid, gradient_hash=hashlib.sha256(data).digest(), pow_nonce=42
    )
    await journal.apply(
        Change(
            rec.id,
            now,
            state=TxState.BLOCKCHAIN_SUBMIT,
            claim_submission=True,
            fields={
                "cid": cid,
                "signed_raw": signed.raw,
                "tx_hash": signed.tx_hash,
                "account_nonce": signed.account_nonce,
            },
        )
    )
    if broadcast:
        await rig.chain.broadcast(signed)
    if state is TxState.BLOCKCHAIN_SUBMIT:
        return rec.id
    await journal.apply(
        Change(
            rec.id, now, state=TxState.TASK_COMPLETE, fields={"receipt_block": 101}, outbox_add=True
        )
    )
    return rec.id


async def restart(rig: Rig) -> list[dict[str, object]]:
    coordinator = await rig.reopen()
    rig.faults.calls.clear()
    report = await coordinator.start(background=False)
    await coordinator.wait_idle()
    assert report.integrity_problems == []
    return report.reconciled


async def test_training_resumes_through_the_trainer(rig: Rig) -> None:
    tx = await crashed_at(rig, TxState.TRAINING)
    reconciled = await restart(rig)
    assert reconciled[0]["action"] == "resume training from the trainer's checkpoint"
    assert (await rig.coordinator.status(tx)).state == "committed"
    assert rig.faults.count("train") == 1


async def test_upload_with_a_live_pin_is_not_repeated(rig: Rig) -> None:
    tx = await crashed_at(rig, TxState.IPFS_UPLOAD, pinned=True, journal_cid=True)
    await restart(rig)
    assert (await rig.coordinator.status(tx)).state == "committed"
    assert rig.faults.count("is_pinned") == 1
    assert rig.faults.count("add_and_pin") == 0


async def test_upload_interrupted_before_its_cid_was_journaled_is_readded(rig: Rig) -> None:
    tx = await crashed_at(rig, TxState.IPFS_UPLOAD, pinned=True)
    await restart(rig)
    status = await rig.coordinator.status(tx)
    assert status.state == "committed"
    assert rig.store.pins == {status.cid}  # the same CID, pinned once


async def test_signed_but_not_broadcast_is_rebroadcast_with_the_same_bytes(rig: Rig) -> None:
    tx = await crashed_at(rig, TxState.BLOCKCHAIN_SUBMIT, pinned=True)
    await restart(rig)
    assert (await rig.coordinator.status(tx)).state == "committed"
    assert len(rig.chain.signed) == 1
    assert rig.chain.broadcasts == [rig.chain.signed[0].tx_hash]


async def test_mined_before_the_crash_is_found_not_resent(rig: Rig) -> None:
    tx = await crashed_at(rig, TxState.BLOCKCHAIN_SUBMIT, pinned=True, broadcast=True)
    await restart(rig)
    assert (await rig.coordinator.status(tx)).state == "committed"
    assert rig.faults.count("receipt") == 1
    assert rig.faults.count("broadcast") == 0
    assert len(rig.chain.broadcasts) == 1


async def test_expired_submission_not_on_chain_is_sent_again_not_undone(rig: Rig) -> None:
    # Past the pivot a deadline cannot prove the signed bytes will never be mined: the same
    # bytes are sent again and the chain settles it (here: mined, so the work is kept).
    tx = await crashed_at(rig, TxState.BLOCKCHAIN_SUBMIT, pinned=True)
    rig.clock.advance(301)
    reconciled = await restart(rig)
    assert reconciled[0]["action"] == "past its deadline: the chain settles it (sent again)"
    status = await rig.coordinator.status(tx)
    assert status.state == "committed"
    assert rig.chain.broadcasts == [rig.chain.signed[0].tx_hash]
    assert len(rig.chain.submissions) == 1


async def test_expired_submission_refused_by_the_chain_is_rolled_back(rig: Rig) -> None:
    tx = await crashed_at(rig, TxState.BLOCKCHAIN_SUBMIT, pinned=True)
    rig.faults.fail("broadcast", PermanentError("round 1 is closed"), times=None)
    rig.clock.advance(301)
    await restart(rig)
    status = await rig.coordinator.status(tx)
    assert status.state == "rolled_back"
    assert rig.store.pins == set()
    assert rig.chain.submissions == {}


async def test_expired_upload_interrupted_mid_add_is_undone(rig: Rig) -> None:
    tx = await crashed_at(rig, TxState.IPFS_UPLOAD, pinned=True)
    rig.clock.advance(301)
    await restart(rig)
    assert (await rig.coordinator.status(tx)).state == "rolled_back"
    assert rig.store.pins == set()  # the CID was learned by re-adding, then unpinned


async def test_task_complete_commits_and_the_outbox_continues(rig: Rig) -> None:
    tx = await crashed_at(rig, TxState.TASK_COMPLETE, pinned=True, broadcast=True)
    await restart(rig)
    assert (await rig.coordinator.status(tx)).state == "committed"
    assert rig.task_api.completed == []
    assert await rig.coordinator.deliver_outbox() == 1
    assert rig.task_api.completed == [1]


async def test_start_deletes_gradient_files_a_kill_left_and_keeps_needed_ones(rig: Rig) -> None:
    """A kill between the commit that released a gradient and the file's deletion (or in
    the middle of a write) leaves a file nobody reads: the next start deletes it. Files of
    unfinished transactions and of open dead letters stay; other files are not touched."""
    unfinished = await crashed_at(rig, TxState.IPFS_UPLOAD, round_id=1, pinned=True)
    lettered = await crashed_at(rig, TxState.IPFS_UPLOAD, round_id=2)
    journal = rig.coordinator.journal
    await journal.apply(
        Change(
            lettered,
            rig.clock.time(),
            state=TxState.FAILED,
            dead_letter=("refused", "validation", {}),
        )
    )
    artifacts = rig.tmp / "artifacts"
    artifacts.mkdir(exist_ok=True)
    for name in (
        f"{unfinished}.safetensors",
        f"{lettered}.safetensors",
        "tx-committed-long-ago.safetensors",
        ".tx-9.safetensors.4242.tmp",
        "notes.txt",
    ):
        if not (artifacts / name).exists():
            (artifacts / name).write_bytes(b"x")
    coordinator = await rig.reopen()
    report = await coordinator.start(background=False)
    left = sorted(p.name for p in artifacts.iterdir())
    assert left == sorted([f"{unfinished}.safetensors", f"{lettered}.safetensors", "notes.txt"])
    assert report.strays_removed == 2
    await coordinator.wait_idle()
