"""The chain client on the embedded devnet: signing, nonces across restarts, classification."""

from __future__ import annotations

import pytest

from r3mes_desktop.adapters.chain.reverts import NonceConsumedError
from r3mes_desktop.adapters.chain.transport import TxRejected
from r3mes_desktop.core.clock import ManualClock
from r3mes_desktop.core.errors import (
    AlreadySubmittedError,
    AuthenticationError,
    NetworkError,
    PermanentError,
    TimeoutNetworkError,
    ValidationError,
)
from tests.helpers.service_fakes import gradient, open_devnet, solve_pow


async def _submission(devnet, spec, tag="a", cid="bafkreiaaaa"):
    _, ghash = gradient(tag)
    nonce = solve_pow(ghash, devnet.miner_address, spec.round_id, spec.difficulty)
    return await devnet.chain.sign_submission(
        round_id=spec.round_id, cid=cid, gradient_hash=ghash, pow_nonce=nonce
    )


async def test_sign_is_local_idempotent_and_survives_restart(tmp_path) -> None:
    devnet = await open_devnet(tmp_path)
    spec = (await devnet.chain.open_rounds())[0]
    nonce_before = await devnet.evm.nonce(devnet.miner_address)
    signed = await _submission(devnet, spec)
    assert await devnet.chain.receipt(signed.tx_hash) is None
    assert await devnet.evm.nonce(devnet.miner_address) == nonce_before  # no network effect
    assert await _submission(devnet, spec) == signed
    await devnet.close()  # "crash" before broadcast

    devnet = await open_devnet(tmp_path)
    again = await _submission(devnet, spec)
    assert again == signed  # same bytes and hash as the journal may hold
    await devnet.chain.broadcast(again)
    await devnet.chain.broadcast(again)  # already mined: still fine
    receipt = await devnet.chain.wait_receipt(again.tx_hash, timeout_s=5)
    assert receipt.success
    stored = await devnet.chain.submission_of(spec.round_id)
    assert stored is not None and stored.cid == "bafkreiaaaa"
    other = (await devnet.chain.open_rounds())[0]
    assert other.round_id != spec.round_id
    nxt = await _submission(devnet, other, tag="b")
    assert nxt.account_nonce == signed.account_nonce + 1
    await devnet.close()


async def test_duplicate_bad_proof_closed_round(tmp_path) -> None:
    devnet = await open_devnet(tmp_path)
    first, second, third = await devnet.chain.open_rounds()
    signed = await _submission(devnet, first, cid="bafkmine")
    await devnet.chain.broadcast(signed)
    await devnet.chain.wait_receipt(signed.tx_hash, timeout_s=5)
    with pytest.raises(AlreadySubmittedError) as dup:
        await _submission(devnet, first, tag="other", cid="bafkother")
    assert dup.value.stored_cid == "bafkmine"

    _, ghash = gradient("bad")
    with pytest.raises(ValidationError, match="proof of work"):
        await devnet.chain.sign_submission(
            round_id=second.round_id, cid="bafkx", gradient_hash=ghash, pow_nonce=1
        )
    await devnet.operator.close_round(third.round_id)
    with pytest.raises(PermanentError, match="not open"):
        await _submission(devnet, third, tag="late")
    await devnet.close()


async def test_complete_task_is_idempotent(tmp_path) -> None:
    devnet = await open_devnet(tmp_path)
    spec = (await devnet.chain.open_rounds())[0]
    with pytest.raises(ValidationError, match="round_id: no submission"):
        await devnet.task_api.complete_task(round_id=spec.round_id)
    signed = await _submission(devnet, spec)
    await devnet.chain.broadcast(signed)
    await devnet.chain.wait_receipt(signed.tx_hash, timeout_s=5)
    await devnet.task_api.complete_task(round_id=spec.round_id)
    nonce = await devnet.evm.nonce(devnet.miner_address)
    await devnet.task_api.complete_task(round_id=spec.round_id)
    assert await devnet.evm.nonce(devnet.miner_address) == nonce  # nothing sent again
    await devnet.close()


async def test_stale_unsent_signature_gives_its_nonce_back(tmp_path) -> None:
    clock = ManualClock()
    devnet = await open_devnet(tmp_path, clock=clock)
    a, b, _ = await devnet.chain.open_rounds()
    abandoned = await _submission(devnet, a)
    fresh = await _submission(devnet, b, tag="b")
    assert fresh.account_nonce == abandoned.account_nonce + 1  # A may still be in flight
    with pytest.raises(NetworkError, match="not accepted yet"):  # a nonce gap (no tx pool)
        await devnet.chain.broadcast(fresh)
    await clock.sleep(devnet.chain.stale_nonce_s + 1)
    _, _, c = await devnet.chain.open_rounds()
    replacement = await _submission(devnet, c, tag="c")
    assert replacement.account_nonce == abandoned.account_nonce  # the hole is filled
    await devnet.chain.broadcast(replacement)
    await devnet.chain.broadcast(fresh)
    assert (await devnet.chain.wait_receipt(fresh.tx_hash, timeout_s=5)).success
    with pytest.raises(NonceConsumedError, match="can never be mined"):
        await devnet.chain.broadcast(abandoned)
    await devnet.close()


async def test_a_shortened_stale_nonce_s_reaches_the_nonce_choice(tmp_path) -> None:
    """The chaos harness shortens `stale_nonce_s` on a running client: the nonce choice
    must use the new value, not the one the client was built with."""
    clock = ManualClock()
    devnet = await open_devnet(tmp_path, clock=clock)
    devnet.chain.stale_nonce_s = 1.0
    a, b, c = await devnet.chain.open_rounds()
    abandoned = await _submission(devnet, a)
    await _submission(devnet, b, tag="b")
    await clock.sleep(2.0)  # far below the devnet's own threshold
    replacement = await _submission(devnet, c, tag="c")
    assert replacement.account_nonce == abandoned.account_nonce
    await devnet.close()


class _RefusingOnce:
    """The devnet's node, refusing the first raw transaction it is sent."""

    def __init__(self, inner, kind: str) -> None:
        self._inner, self._kind = inner, kind

    def __getattr__(self, name):
        return getattr(self._inner, name)

    async def send_raw(self, raw: bytes) -> str:
        if self._kind:
            kind, self._kind = self._kind, ""
            raise TxRejected(kind, "insufficient funds for gas * price + value")
        return await self._inner.send_raw(raw)


async def test_a_refused_transaction_gives_its_nonce_back_at_once(tmp_path) -> None:
    """Refused (insufficient funds): no pool holds it, so the next signature reuses its
    nonce instead of leaving a gap every later submission waits behind."""
    devnet = await open_devnet(tmp_path)
    devnet.chain.transport = _RefusingOnce(devnet.evm, "insufficient_funds")
    a, b, _ = await devnet.chain.open_rounds()
    refused = await _submission(devnet, a)
    with pytest.raises(AuthenticationError, match="insufficient funds"):
        await devnet.chain.broadcast(refused)
    fresh = await _submission(devnet, b, tag="b")
    assert fresh.account_nonce == refused.account_nonce
    await devnet.chain.broadcast(fresh)
    assert (await devnet.chain.wait_receipt(fresh.tx_hash, timeout_s=5)).success
    await devnet.close()


async def test_a_submission_behind_a_hole_fills_it_and_lands_without_a_new_signature(
    tmp_path,
) -> None:
    """Nonce N refused (a hole), N+1 never sent and stale, N+2 parked behind them: its
    re-send fills both with empty transfers to ourselves and lands, although nothing new
    is signed (a stopped miner must not wait for the next round to unblock its work)."""
    clock = ManualClock()
    devnet = await open_devnet(tmp_path, clock=clock)
    devnet.chain.transport = _RefusingOnce(devnet.evm, "insufficient_funds")
    a, b, c = await devnet.chain.open_rounds()
    start = await devnet.evm.nonce(devnet.miner_address)
    refused = await _submission(devnet, a)
    abandoned = await _submission(devnet, b, tag="b")
    parked = await _submission(devnet, c, tag="c")
    with pytest.raises(AuthenticationError):
        await devnet.chain.broadcast(refused)
    with pytest.raises(NetworkError, match="not accepted yet"):  # N+1 may still be sent
        await devnet.chain.broadcast(parked)
    assert await devnet.evm.nonce(devnet.miner_address) == start + 1  # N filled at once

    await clock.sleep(devnet.chain.stale_nonce_s + 1)
    await devnet.chain.broadcast(parked)
    assert (await devnet.chain.wait_receipt(parked.tx_hash, timeout_s=5)).success
    assert await devnet.evm.nonce(devnet.miner_address) == start + 3  # 2 fillers + ours
    assert (await devnet.chain.submission_of(c.round_id)).cid == "bafkreiaaaa"
    assert await devnet.chain.submission_of(b.round_id) is None
    with pytest.raises(NonceConsumedError, match="can never be mined"):
        await devnet.chain.broadcast(abandoned)
    assert await devnet.chain.fill_nonce_gaps() == 0  # nothing live above the account
    await devnet.close()


async def test_wait_receipt_times_out_on_the_injected_clock(tmp_path) -> None:
    clock = ManualClock()
    devnet = await open_devnet(tmp_path, clock=clock)
    with pytest.raises(TimeoutNetworkError, match="not mined within 3s on embedded devnet"):
        await devnet.chain.wait_receipt("0x" + "ab" * 32, timeout_s=3)
    assert sum(clock.sleeps) >= 3
    await devnet.close()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"round_id": -1}, "round_id"),
        ({"pow_nonce": 2**64}, "pow_nonce"),
        ({"cid": "not a cid!"}, "cid"),
        ({"gradient_hash": b"short"}, "gradient_hash"),
    ],
)
async def test_bad_arguments_name_the_field(tmp_path, kwargs, field) -> None:
    devnet = await open_devnet(tmp_path)
    args = {"round_id": 1, "cid": "bafkx", "gradient_hash": b"\0" * 32, "pow_nonce": 0}
    with pytest.raises(ValidationError, match=field):
        await devnet.chain.sign_submission(**{**args, **kwargs})
    await devnet.close()


async def test_open_rounds_reads_each_rounds_spec_once_while_it_is_listed(tmp_path) -> None:
    """A round's spec never changes after `openRound`: one `getRound` per round, not one
    per round per poll; a closed round drops out of the list (and the cache)."""
    devnet = await open_devnet(tmp_path, keep_open=2)
    reads: list[str] = []
    view = devnet.chain._view

    async def counting(fn_name: str, *args: object) -> object:
        reads.append(fn_name)
        return await view(fn_name, *args)

    devnet.chain._view = counting  # type: ignore[method-assign]
    first = await devnet.chain.open_rounds()
    again = await devnet.chain.open_rounds()
    assert again == first and len(first) == 2
    assert reads.count("getRound") == 2 and reads.count("openRoundsFor") == 2
    await devnet.operator.close_round(first[0].round_id)
    opened = await devnet.operator.ensure_rounds(devnet.miner_address)
    now = await devnet.chain.open_rounds()
    assert [r.round_id for r in now] == sorted([first[1].round_id, *opened])
    assert reads.count("getRound") == 3  # only the new round was read
    assert first[0].round_id not in devnet.chain._round_specs
    await devnet.close()


async def _send_by_hand(devnet, tmp_path, nonce: int) -> None:
    """A transfer from the miner's own key, as a person with a wallet (or a second rig on
    the same key) would send it, taking `nonce`."""
    from r3mes_desktop.adapters.devnet.devnet import _dev_account

    account = _dev_account(tmp_path / "devnet")
    max_fee, tip = await devnet.evm.fee_params()
    signed = account.sign_transaction(
        {
            "type": 2,
            "chainId": devnet.chain.chain_id,
            "nonce": nonce,
            "to": account.address,
            "value": 0,
            "gas": 21_000,
            "maxFeePerGas": max_fee,
            "maxPriorityFeePerGas": tip,
        }
    )
    await devnet.evm.send_raw(bytes(signed.raw_transaction))


async def test_a_nonce_taken_by_hand_voids_the_signature_and_signing_again_lands(
    tmp_path,
) -> None:
    """Our signed submission's nonce is used by a hand-sent transaction: the chain proves
    the bytes void (confirmed nonce past ours, no receipt), and signing the same call again
    takes a fresh nonce and lands (it used to hand back the void bytes forever)."""
    devnet = await open_devnet(tmp_path)
    spec = (await devnet.chain.open_rounds())[0]
    signed = await _submission(devnet, spec)
    await _send_by_hand(devnet, tmp_path, signed.account_nonce)
    with pytest.raises(NonceConsumedError, match="can never be mined") as void:
        await devnet.chain.broadcast(signed)
    assert void.value.category == "permanent"
    again = await _submission(devnet, spec)
    assert again.account_nonce == signed.account_nonce + 1
    assert again.tx_hash != signed.tx_hash
    await devnet.chain.broadcast(again)
    assert (await devnet.chain.wait_receipt(again.tx_hash, timeout_s=5)).success
    assert (await devnet.chain.submission_of(spec.round_id)).cid == "bafkreiaaaa"
    await devnet.close()
