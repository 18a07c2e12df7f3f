"""The chain client and the contract against anvil (Foundry), an independent EVM."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import rlp
from eth_account import Account
from eth_utils import keccak, to_checksum_address

from bench.chaos.peers import ANVIL_KEY0, missing_anvil, restart_anvil, start_anvil
from r3mes_desktop.adapters.chain import artifact
from r3mes_desktop.adapters.chain.abi import decode_output, encode_call
from r3mes_desktop.adapters.chain.client import ChainClient
from r3mes_desktop.adapters.chain.nonces import NonceStore
from r3mes_desktop.adapters.chain.transport import FallbackTransport, RpcTransport
from r3mes_desktop.adapters.devnet.operator import DevnetOperator
from r3mes_desktop.core.clock import SystemClock
from r3mes_desktop.core.errors import AlreadySubmittedError, AuthenticationError, ValidationError
from tests.helpers.service_fakes import TINY_ROUNDS, bad_pow, gradient, solve_pow
from tests.integration.conftest import free_port, peer_missing

pytestmark = pytest.mark.integration


async def _deploy(transport: RpcTransport) -> DevnetOperator:
    """A fresh deployment by key 0: its next nonce decides the contract's address."""
    operator = DevnetOperator(transport, key=bytes.fromhex(ANVIL_KEY0[2:]), template=TINY_ROUNDS)
    nonce = await transport.nonce(operator.address)
    operator.contract_address = to_checksum_address(
        keccak(rlp.encode([bytes.fromhex(operator.address[2:]), nonce]))[12:]
    )
    await operator._send(artifact.load().bytecode, to=None, gas=3_000_000)
    return operator


@pytest.fixture
async def deployed(anvil: str) -> tuple[str, DevnetOperator]:
    transport = RpcTransport(anvil)
    operator = await _deploy(transport)
    yield operator.contract_address, operator
    await transport.close()


async def _client(url: str, contract: str, tmp_path: Path, operator: DevnetOperator) -> ChainClient:
    account = Account.create()
    await operator.fund(account.address)
    return await ChainClient.connect(
        transport=RpcTransport(url),
        account=account,
        contract_address=contract,
        nonces=NonceStore(tmp_path / "nonces.sqlite"),
        expected_chain_id=1337,
        clock=SystemClock(),
        poll_s=0.1,
    )


async def test_submit_duplicate_complete_on_anvil(anvil, deployed, tmp_path) -> None:
    contract, operator = deployed
    client = await _client(anvil, contract, tmp_path, operator)
    await operator.ensure_rounds(client.miner_address)
    rounds = await client.open_rounds()
    assert len(rounds) == 3 and rounds[0].difficulty == 16
    spec = rounds[0]
    _, ghash = gradient("anvil")
    nonce = solve_pow(ghash, client.miner_address, spec.round_id, spec.difficulty)
    cid = "bafkreicshnkve3nbgahd4chikndpj6baaglwsfpwowdzoxpo3p3lay76im"
    signed = await client.sign_submission(
        round_id=spec.round_id, cid=cid, gradient_hash=ghash, pow_nonce=nonce
    )
    await client.broadcast(signed)
    await client.broadcast(signed)  # "already known" / mined: still a success
    receipt = await client.wait_receipt(signed.tx_hash, timeout_s=30)
    assert receipt.success
    stored = await client.submission_of(spec.round_id)
    assert stored is not None and stored.cid == cid and stored.pow_nonce == nonce
    with pytest.raises(AlreadySubmittedError) as dup:
        await client.sign_submission(
            round_id=spec.round_id, cid=cid, gradient_hash=ghash, pow_nonce=nonce + 1
        )
    assert dup.value.stored_cid == cid
    await client.complete_task(round_id=spec.round_id)
    await client.complete_task(round_id=spec.round_id)  # idempotent
    assert [r.round_id for r in await client.open_rounds()] == [r.round_id for r in rounds[1:]]
    await client.close()


async def test_bad_proof_and_mined_duplicate_are_classified(anvil, deployed, tmp_path) -> None:
    contract, operator = deployed
    client = await _client(anvil, contract, tmp_path, operator)
    await operator.ensure_rounds(client.miner_address)
    spec = (await client.open_rounds())[0]
    _, ghash = gradient("bad")
    wrong = bad_pow(ghash, client.miner_address, spec.round_id, spec.difficulty)
    with pytest.raises(ValidationError, match="proof of work"):
        await client.sign_submission(
            round_id=spec.round_id, cid="bafkabc", gradient_hash=ghash, pow_nonce=wrong
        )
    # Two different submissions signed before either is mined: the second one reverts on
    # chain, and the decoded reason carries the CID the contract kept.
    good = solve_pow(ghash, client.miner_address, spec.round_id, spec.difficulty)
    first = await client.sign_submission(
        round_id=spec.round_id, cid="bafkfirst", gradient_hash=ghash, pow_nonce=good
    )
    other_hash = bytes(reversed(ghash))
    other = solve_pow(other_hash, client.miner_address, spec.round_id, spec.difficulty)
    second = await client.sign_submission(
        round_id=spec.round_id, cid="bafksecond", gradient_hash=other_hash, pow_nonce=other
    )
    assert second.account_nonce == first.account_nonce + 1
    await client.broadcast(first)
    await client.broadcast(second)
    await client.wait_receipt(first.tx_hash, timeout_s=30)
    with pytest.raises(AlreadySubmittedError) as dup:
        await client.wait_receipt(second.tx_hash, timeout_s=30)
    assert dup.value.stored_cid == "bafkfirst"
    await client.close()


async def test_connect_checks_and_fallback(anvil, deployed, tmp_path) -> None:
    contract, operator = deployed
    dead = f"http://127.0.0.1:{free_port()}"
    account = Account.create()
    nonces = NonceStore(tmp_path / "n.sqlite")
    transport = FallbackTransport([RpcTransport(dead), RpcTransport(anvil)])
    client = await ChainClient.connect(
        transport=transport, account=account, contract_address=contract,
        nonces=nonces, expected_chain_id=1337,
    )  # fmt: skip
    assert client.chain_id == 1337
    wrong_chain, no_code = RpcTransport(anvil), RpcTransport(anvil)
    try:  # a refused connect leaves the transport to whoever made it
        with pytest.raises(ValidationError, match="chain 1337, expected 5"):
            await ChainClient.connect(
                transport=wrong_chain, account=account, contract_address=contract,
                nonces=nonces, expected_chain_id=5,
            )  # fmt: skip
        with pytest.raises(ValidationError, match="no contract code"):
            await ChainClient.connect(
                transport=no_code, account=account,
                contract_address="0x" + "12" * 20, nonces=nonces,
            )  # fmt: skip
    finally:
        await wrong_chain.close()
        await no_code.close()
    # An unfunded account: anvil refuses the transaction for lack of funds.
    await operator.ensure_rounds(client.miner_address)
    spec = (await client.open_rounds())[0]
    _, ghash = gradient("poor")
    nonce = solve_pow(ghash, client.miner_address, spec.round_id, spec.difficulty)
    with pytest.raises(AuthenticationError, match="insufficient funds"):
        signed = await client.sign_submission(
            round_id=spec.round_id, cid="bafkpoor", gradient_hash=ghash, pow_nonce=nonce
        )
        await client.broadcast(signed)
    await client.close()


async def test_restart_keeps_the_chain(tmp_path: Path) -> None:
    """The multi-miner part restarts the node as a fault (`restart_anvil`): the blocks, the
    contract with its open rounds and the balances mined before are there after it, on the
    same URL, and the operator's next transaction takes the next nonce."""
    if why := missing_anvil():
        peer_missing(why)
    root = tmp_path / "anvil"
    node = start_anvil(root)
    try:
        before = RpcTransport(node.address)
        try:
            operator = await _deploy(before)
            miner = Account.create().address
            await operator.fund(miner)
            opened = await operator.ensure_rounds(miner)
            head = await before.block()
            funded = await before.balance(miner)
        finally:
            await before.close()
        assert head is not None and len(opened) == 3 and funded > 0
        node = await asyncio.to_thread(restart_anvil, node, root)
        after = RpcTransport(node.address)
        try:
            assert await after.block(head["number"]) == head
            assert await after.balance(miner) == funded
            call = {"to": operator.contract_address, "data": encode_call("openRoundsFor", miner)}
            assert list(decode_output("openRoundsFor", await after.call(call))) == opened
            again = DevnetOperator(after, key=bytes.fromhex(ANVIL_KEY0[2:]), template=TINY_ROUNDS)
            again.contract_address = operator.contract_address
            await again.close_round(opened[0])
            assert (await after.block())["number"] == head["number"] + 1
        finally:
            await after.close()
    finally:
        node.stop()
