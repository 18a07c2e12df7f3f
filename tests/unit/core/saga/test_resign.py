"""A signature the chain proves void is replaced, journaled first, and lands once."""

from __future__ import annotations

from pathlib import Path

from r3mes_desktop.core.errors import SignatureVoidError
from tests.helpers.coordinator_rig import make_rig
from tests.helpers.fakes import make_spec


def _void() -> SignatureVoidError:
    return SignatureVoidError("transaction 0xab can never be mined: nonce 0 was used")


async def test_a_void_signature_is_signed_again_and_commits(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    await rig.coordinator.start(background=False)
    rig.faults.fail("broadcast", _void())
    status = await rig.coordinator.run_transaction(make_spec(31))

    assert status.state == "committed"
    assert len(rig.chain.signed) == 2  # the void one, then a fresh nonce
    first, second = rig.chain.signed
    assert second.account_nonce == first.account_nonce + 1
    rec = await rig.coordinator.journal.get(status.transaction_id)
    assert rec is not None and rec.tx_hash == second.tx_hash and rec.signed_raw == second.raw
    assert len(rig.chain.submissions) == 1
    notes = [h["message"] for h in status.history if h["kind"] == "note"]
    assert any("signed again with account nonce 1" in n for n in notes), notes
    assert not any("sign the submission again" in (h.get("message") or "") for h in status.history)
    assert await rig.coordinator.journal.integrity_check() == []
    await rig.coordinator.close()


async def test_a_nonce_taken_again_and_again_fails_and_its_dead_letter_retry_lands(
    tmp_path: Path,
) -> None:
    rig = make_rig(tmp_path)
    await rig.coordinator.start(background=False)
    rig.faults.fail("broadcast", _void(), times=None)
    status = await rig.coordinator.run_transaction(make_spec(32))
    assert status.state == "rolled_back"
    assert status.error_category == "permanent"
    letters = [d for d in await rig.coordinator.dead_letters() if d.status == "open"]
    assert len(letters) == 1

    rig.faults.clear()
    status = await rig.coordinator.retry_dead_letter(letters[0].id)
    assert status.state == "committed"
    assert rig.chain.submissions[32].cid == status.cid
    rec = await rig.coordinator.journal.get(status.transaction_id)
    assert rec is not None and rec.tx_hash == rig.chain.signed[-1].tx_hash
    assert await rig.coordinator.journal.integrity_check() == []
    await rig.coordinator.close()
