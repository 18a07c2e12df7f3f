"""R3mesRounds v2: assignments, validators, one verdict per submission, credits, deadlines."""

from __future__ import annotations

import asyncio

import pytest
from eth_account import Account

from r3mes_desktop.adapters.chain.abi import encode_call
from r3mes_desktop.adapters.chain.reverts import revert_error
from r3mes_desktop.adapters.chain.transport import CallReverted
from r3mes_desktop.adapters.devnet.evm import DevnetEvm
from r3mes_desktop.adapters.devnet.operator import DevnetOperator
from r3mes_desktop.core import workproof
from r3mes_desktop.core.errors import PermanentError
from tests.helpers.contract_calls import send_tx as _tx
from tests.helpers.contract_calls import view as _view
from tests.helpers.service_fakes import TINY_ROUNDS, gradient, solve_pow


@pytest.fixture
async def chain(tmp_path):
    evm = await DevnetEvm.open(tmp_path / "chain.log")
    operator = DevnetOperator(evm, key=evm.funded_keys[0], template=TINY_ROUNDS)
    await operator.deploy_if_needed()
    miner = Account.from_key(evm.funded_keys[1])
    validator = Account.from_key(evm.funded_keys[2])
    yield evm, operator, miner, validator
    await evm.close()


async def _submit(evm, operator, miner, round_id, tag="v2"):
    _, ghash = gradient(tag)
    nonce = solve_pow(ghash, miner.address, round_id, 16)
    data = encode_call("submitGradient", round_id, "bafkreiexample", ghash, nonce)
    return await _tx(evm, miner, operator.contract_address, data)


async def test_assignment_is_the_clients_rule_and_differs_per_miner(chain) -> None:
    evm, operator, miner, validator = chain
    round_id = await operator.open_round()
    seed, *_ = await _view(evm, operator, "getRound", round_id)
    for who in (miner.address, validator.address):
        on_chain = await _view(evm, operator, "assignmentOf", round_id, who)
        assert on_chain == workproof.assignment(seed, who, round_id)
    mine = await _view(evm, operator, "assignmentOf", round_id, miner.address)
    other = await _view(evm, operator, "assignmentOf", round_id, validator.address)
    assert mine != other
    assert await _view(evm, operator, "VERSION") == "r3mes-rounds/2"


async def test_only_validators_post_one_verdict_and_accepted_work_is_credited_once(chain) -> None:
    evm, operator, miner, validator = chain
    contract = operator.contract_address
    round_id = await operator.open_round()
    assert await _submit(evm, operator, miner, round_id) == 1
    verdict = encode_call("postVerdict", round_id, miner.address, True, 0)
    with pytest.raises(CallReverted, match="not validator"):
        await _tx(evm, validator, contract, verdict)
    await operator.add_validator(validator.address)
    await operator.add_validator(validator.address)  # idempotent: no second transaction
    with pytest.raises(CallReverted, match="reason must be 0 exactly when accepted"):
        await _tx(
            evm, validator, contract, encode_call("postVerdict", round_id, miner.address, True, 3)
        )
    assert await _tx(evm, validator, contract, verdict) == 1
    assert await _view(evm, operator, "credits", miner.address) == TINY_ROUNDS.reward
    with pytest.raises(CallReverted, match="verdict exists"):
        await _tx(
            evm, validator, contract, encode_call("postVerdict", round_id, miner.address, False, 5)
        )
    assert await _view(evm, operator, "credits", miner.address) == TINY_ROUNDS.reward
    stored = await _view(evm, operator, "submissionOf", round_id, miner.address)
    assert (stored[6], stored[7], stored[8].lower()) == (1, 0, validator.address.lower())
    first = await _view(evm, operator, "submitterAt", round_id, 0)
    assert first.lower() == miner.address.lower()
    with pytest.raises(CallReverted, match="no submission"):
        await _tx(
            evm,
            validator,
            contract,
            encode_call("postVerdict", round_id, validator.address, False, 1),
        )


async def test_a_rejected_submission_earns_nothing(chain) -> None:
    evm, operator, miner, validator = chain
    await operator.add_validator(validator.address)
    round_id = await operator.open_round()
    await _submit(evm, operator, miner, round_id)
    reject = encode_call(
        "postVerdict", round_id, miner.address, False, int(workproof.Reason.NOT_BOUND)
    )
    assert await _tx(evm, validator, operator.contract_address, reject) == 1
    assert await _view(evm, operator, "credits", miner.address) == 0
    assert (await _view(evm, operator, "submissionOf", round_id, miner.address))[6:8] == (2, 1)


async def test_the_first_openings_stay(chain) -> None:
    evm, operator, miner, _ = chain
    contract = operator.contract_address
    round_id = await operator.open_round()
    await _submit(evm, operator, miner, round_id)
    await _tx(evm, miner, contract, encode_call("completeTask", round_id, "bafyfirst"))
    await _tx(evm, miner, contract, encode_call("completeTask", round_id, "bafysecond"))
    stored = await _view(evm, operator, "submissionOf", round_id, miner.address)
    assert stored[4] is True and stored[5] == "bafyfirst"


async def test_a_round_past_its_deadline_refuses_submissions(chain) -> None:
    evm, operator, miner, _ = chain
    contract = operator.contract_address
    latest = await evm.block(None)
    assert latest is not None
    soon = int(latest["timestamp"]) + 2
    data = encode_call("openRound", 900, 5, 16, 4, "{}", "m", soon, 7)
    await _tx(evm, Account.from_key(evm.funded_keys[0]), contract, data)
    info = await _view(evm, operator, "getRound", 900)
    assert info[7:] == (soon, 7, 0)
    for _ in range(40):  # blocks are stamped with wall time: mine until one is past it
        await asyncio.sleep(0.25)
        await operator.fund(miner.address, at_least_wei=2**255)  # any transaction: a block
        latest = await evm.block(None)
        assert latest is not None
        if int(latest["timestamp"]) > soon + 1:
            break
    with pytest.raises(CallReverted, match="round past deadline") as caught:
        await _submit(evm, operator, miner, 900, tag="late")
    error = revert_error(caught.value.reason, what="submitGradient for round 900")
    assert isinstance(error, PermanentError) and "deadline" in error.message
    past = encode_call("openRound", 901, 5, 16, 4, "{}", "m", 1, 7)
    with pytest.raises(CallReverted, match="deadline in the past"):
        await _tx(evm, Account.from_key(evm.funded_keys[0]), contract, past)
