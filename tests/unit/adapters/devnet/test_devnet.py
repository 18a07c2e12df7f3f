"""The embedded devnet: first run, restart by replay, torn log tails, the operator."""

from __future__ import annotations

import stat

from r3mes_desktop.adapters.devnet.devnet import DEV_PASSWORD_FILE
from r3mes_desktop.adapters.devnet.txlog import TxLog
from r3mes_desktop.core.clock import ManualClock
from tests.helpers.service_fakes import gradient, open_devnet, solve_pow


async def test_first_run_creates_funded_dev_miner_and_rounds(tmp_path) -> None:
    devnet = await open_devnet(tmp_path, keep_open=2)
    keys = tmp_path / "devnet" / "keys"
    for path in keys.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert (keys / DEV_PASSWORD_FILE).exists()
    assert await devnet.evm.balance(devnet.miner_address) >= 10 * 10**18
    rounds = await devnet.chain.open_rounds()
    assert [r.difficulty for r in rounds] == [16, 16]
    assert rounds[0].hyperparams == {"preset": "tiny"}
    await devnet.close()


async def test_state_survives_restart_by_replaying_the_log(tmp_path) -> None:
    devnet = await open_devnet(tmp_path)
    spec = (await devnet.chain.open_rounds())[0]
    data, ghash = gradient("persist")
    cid = await devnet.store.add_and_pin(data)
    nonce = solve_pow(ghash, devnet.miner_address, spec.round_id, spec.difficulty)
    signed = await devnet.chain.sign_submission(
        round_id=spec.round_id, cid=cid, gradient_hash=ghash, pow_nonce=nonce
    )
    await devnet.chain.broadcast(signed)
    receipt = await devnet.chain.wait_receipt(signed.tx_hash, timeout_s=5)
    miner, contract = devnet.miner_address, devnet.contract_address
    await devnet.close()

    reopened = await open_devnet(tmp_path)
    assert reopened.evm.restored + reopened.evm.replayed > 0  # a snapshot, then the tail
    assert (reopened.miner_address, reopened.contract_address) == (miner, contract)
    assert await reopened.chain.receipt(signed.tx_hash) == receipt
    stored = await reopened.chain.submission_of(spec.round_id)
    assert stored is not None and stored.cid == cid
    assert await reopened.store.is_pinned(cid) and await reopened.store.cat(cid) == data
    assert spec.round_id not in [r.round_id for r in await reopened.chain.open_rounds()]
    await reopened.close()


async def test_operator_keeps_rounds_open_for_the_miner(tmp_path) -> None:
    devnet = await open_devnet(tmp_path, keep_open=2)
    first = (await devnet.chain.open_rounds())[0]
    _, ghash = gradient("op")
    nonce = solve_pow(ghash, devnet.miner_address, first.round_id, first.difficulty)
    signed = await devnet.chain.sign_submission(
        round_id=first.round_id, cid="bafkop", gradient_hash=ghash, pow_nonce=nonce
    )
    await devnet.chain.broadcast(signed)
    await devnet.chain.wait_receipt(signed.tx_hash, timeout_s=5)
    opened = await devnet.operator.ensure_rounds(devnet.miner_address)
    assert len(opened) == 1
    assert len(await devnet.chain.open_rounds()) == 2
    assert await devnet.operator.ensure_rounds(devnet.miner_address) == []
    await devnet.close()


async def test_operator_replaces_rounds_left_open_too_long(tmp_path) -> None:
    """A round whose signed submission was rolled back stays open for the miner (it never
    signs twice); the TTL replaces it, so the devnet miner cannot run out of rounds (found
    by bench.chaos: three such rounds left the miner idle for good)."""
    clock = ManualClock()
    devnet = await open_devnet(tmp_path, keep_open=2, clock=clock)
    devnet.operator.round_ttl_s = 60
    before = [r.round_id for r in await devnet.chain.open_rounds()]
    assert await devnet.operator.ensure_rounds(devnet.miner_address) == []
    await clock.sleep(61)
    opened = await devnet.operator.ensure_rounds(devnet.miner_address)
    assert len(opened) == 2
    after = [r.round_id for r in await devnet.chain.open_rounds()]
    assert after == opened and not set(after) & set(before)
    await devnet.close()


def test_txlog_drops_a_torn_tail(tmp_path) -> None:
    log = TxLog(tmp_path / "chain.log")
    log.append(b"one")
    log.append(b"two")
    log.close()
    with (tmp_path / "chain.log").open("ab") as fh:
        fh.write(b"\x00\x00\x00\x09\x00")  # a header cut short by a crash
    again = TxLog(tmp_path / "chain.log")
    assert again.records() == [b"one", b"two"]
    again.append(b"three")
    again.close()
    reopened = TxLog(tmp_path / "chain.log")
    assert reopened.records() == [b"one", b"two", b"three"]
    reopened.close()
