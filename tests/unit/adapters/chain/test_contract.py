"""R3mesRounds on the in-process EVM: the committed artifact, the rules, the revert reasons."""

from __future__ import annotations

import json

import pytest
from eth_account import Account

from r3mes_desktop.adapters.chain import artifact
from r3mes_desktop.adapters.chain.abi import encode_call
from r3mes_desktop.adapters.chain.transport import CallReverted
from r3mes_desktop.adapters.devnet.evm import DevnetEvm
from r3mes_desktop.adapters.devnet.operator import DevnetOperator
from r3mes_desktop.core.pow import pow_digest
from tests.helpers.contract_calls import send_tx as _tx
from tests.helpers.contract_calls import view as _view
from tests.helpers.service_fakes import TINY_ROUNDS, bad_pow, gradient, solve_pow


def test_committed_artifact_matches_the_source() -> None:
    committed = json.loads(artifact.ARTIFACT_PATH.read_text())
    assert committed == artifact.compile_source()
    assert committed["evmVersion"] == "shanghai"
    assert committed["compilerVersion"] == "0.4.3"


@pytest.fixture
async def chain(tmp_path):
    evm = await DevnetEvm.open(tmp_path / "chain.log")
    operator = DevnetOperator(evm, key=evm.funded_keys[0], template=TINY_ROUNDS)
    await operator.deploy_if_needed()
    miner = Account.from_key(evm.funded_keys[1])
    yield evm, operator, miner
    await evm.close()


async def test_pow_digest_matches_the_shared_rule(chain) -> None:
    evm, operator, miner = chain
    _, ghash = gradient("pow")
    on_chain = await _view(evm, operator, "powDigest", ghash, miner.address, 7, 12345)
    assert on_chain == int.from_bytes(pow_digest(ghash, miner.address, 7, 12345), "big")


async def test_submission_rules_and_reasons(chain) -> None:
    evm, operator, miner = chain
    c = operator.contract_address
    rid = await operator.open_round()
    _, ghash = gradient("rules")
    with pytest.raises(CallReverted) as bad:
        nonce = bad_pow(ghash, miner.address, rid, 16)
        await _tx(evm, miner, c, encode_call("submitGradient", rid, "bafkx", ghash, nonce))
    assert bad.value.reason == "bad proof of work"
    with pytest.raises(CallReverted) as closed:
        await _tx(evm, miner, c, encode_call("submitGradient", 999, "bafkx", ghash, 0))
    assert closed.value.reason == "round not open"
    with pytest.raises(CallReverted) as none:
        await _tx(evm, miner, c, encode_call("completeTask", rid))
    assert none.value.reason == "no submission"

    good = solve_pow(ghash, miner.address, rid, 16)
    assert await _tx(evm, miner, c, encode_call("submitGradient", rid, "bafkx", ghash, good)) == 1
    stored = await _view(evm, operator, "submissionOf", rid, miner.address)
    assert (stored[0], stored[1], stored[2], stored[4]) == ("bafkx", ghash, good, False)
    assert rid not in await _view(evm, operator, "openRoundsFor", miner.address)
    with pytest.raises(CallReverted) as dup:
        await _tx(evm, miner, c, encode_call("submitGradient", rid, "bafky", ghash, good))
    assert dup.value.reason == "already submitted"

    assert await _tx(evm, miner, c, encode_call("completeTask", rid)) == 1
    assert await _tx(evm, miner, c, encode_call("completeTask", rid)) == 1  # idempotent
    assert (await _view(evm, operator, "submissionOf", rid, miner.address))[4] is True
    assert await _view(evm, operator, "submissionCount", rid) == 1


async def test_operator_only_and_difficulty_range(chain) -> None:
    evm, operator, miner = chain
    c = operator.contract_address
    with pytest.raises(CallReverted) as who:
        await _tx(evm, miner, c, encode_call("openRound", 50, 1, 16, 2, "{}", "m"))
    assert who.value.reason == "not operator"
    op = Account.from_key(evm.funded_keys[0])
    for bits in (15, 33):
        with pytest.raises(CallReverted) as rng:
            await _tx(evm, op, c, encode_call("openRound", 60, 1, bits, 2, "{}", "m"))
        assert rng.value.reason == "difficulty out of range"
    assert await _tx(evm, op, c, encode_call("openRound", 61, 1, 32, 2, "{}", "m")) == 1
    with pytest.raises(CallReverted, match="round exists"):
        await _tx(evm, op, c, encode_call("openRound", 61, 1, 20, 2, "{}", "m"))
    await operator.close_round(61)
    assert 61 not in await _view(evm, operator, "openRounds")
    assert await _view(evm, operator, "lastRoundId") == 61
