"""On the devnet, three miners with distinct keys train one round: three different updates,
each answered challenge verified and credited once; a free-rider's copy earns nothing.

Real parts throughout: the devnet's EVM and store, one chain client per key, bound training
(`trace.train_bound`, as the worker trains), the miner's challenge answer
(`ProvingTaskApi`) and the devnet's own validator."""

from __future__ import annotations

import hashlib
from pathlib import Path

from eth_account import Account

from r3mes_desktop.adapters.chain.nonces import NonceStore
from r3mes_desktop.adapters.chain.views import VERDICT_ACCEPTED, VERDICT_REJECTED
from r3mes_desktop.adapters.devnet.devnet import connect_chain
from r3mes_desktop.adapters.mining import trace
from r3mes_desktop.adapters.mining.commitments import TraceDir
from r3mes_desktop.adapters.mining.presets import make_plan
from r3mes_desktop.app.devnet_validator import DevnetValidator
from r3mes_desktop.app.proving import ProvingTaskApi
from r3mes_desktop.core import workproof
from r3mes_desktop.core.clock import SYSTEM_CLOCK
from r3mes_desktop.core.workproof import Reason
from tests.helpers.service_fakes import make_caller, open_devnet, solve_pow


def _any_trace_left(root: Path) -> bool:
    return any((root / f"traces-{i}" / "tx").exists() for i in range(3))


async def _submit(chain, round_id: int, cid: str, digest: bytes, difficulty: int) -> None:
    nonce = solve_pow(digest, chain.miner_address, round_id, difficulty)
    signed = await chain.sign_submission(
        round_id=round_id, cid=cid, gradient_hash=digest, pow_nonce=nonce
    )
    await chain.broadcast(signed)
    await chain.wait_receipt(signed.tx_hash, timeout_s=10)


async def test_three_miners_distinct_updates_all_credited_and_a_copy_rejected(tmp_path) -> None:
    devnet = await open_devnet(tmp_path / "data", keep_open=1)
    validator = await DevnetValidator.open(devnet)
    nonce_stores = []
    try:
        spec = (await devnet.chain.open_rounds())[0]
        info = await devnet.chain.round_info(spec.round_id)
        assert info is not None
        chains = []
        for i, key in enumerate(devnet.evm.funded_keys[3:7]):  # three miners and a free-rider
            nonces = NonceStore(tmp_path / f"nonces-{i}.sqlite")
            nonce_stores.append(nonces)
            chains.append(await connect_chain(
                make_caller("chain"), devnet.evm, Account.from_key(key),
                devnet.contract_address, nonces, SYSTEM_CLOCK,
            ))  # fmt: skip
        miners, rider = chains[:3], chains[3]
        hashes = []
        for i, chain in enumerate(miners):
            address = chain.miner_address
            digest = workproof.assignment(spec.seed, address, spec.round_id)
            plan = make_plan(round_id=spec.round_id, seed=workproof.training_seed(digest),
                             base_model_id=spec.base_model_id, steps=spec.steps,
                             hyperparams=dict(spec.hyperparams))  # fmt: skip
            traces = tmp_path / f"traces-{i}"
            package = trace.train_bound(
                plan, miner=address, assignment=digest, trace=TraceDir(traces / "tx")
            )
            cid = await devnet.store.add_and_pin(package)
            hashes.append(hashlib.sha256(package).digest())
            await _submit(chain, spec.round_id, cid, hashes[-1], spec.difficulty)
            await ProvingTaskApi(chain=chain, store=devnet.store, trace_root=traces).complete_task(
                round_id=spec.round_id
            )
        assert len(set(hashes)) == 3  # three assignments, three different updates
        copied = await devnet.chain.submission_info(spec.round_id, miners[0].miner_address)
        assert copied is not None
        await _submit(rider, spec.round_id, copied.cid, copied.gradient_hash, spec.difficulty)
        await rider.complete_task(round_id=spec.round_id, openings_cid=copied.openings_cid)
        for _ in range(5):
            await validator.validator.pass_once()
        for chain in miners:
            sub = await devnet.chain.submission_info(spec.round_id, chain.miner_address)
            assert sub is not None and sub.verdict == VERDICT_ACCEPTED, sub
            assert await devnet.chain.credits_of(chain.miner_address) == info.reward
        copy = await devnet.chain.submission_info(spec.round_id, rider.miner_address)
        assert copy is not None and (copy.verdict, copy.reason) == (
            VERDICT_REJECTED,
            int(Reason.NOT_BOUND),
        )
        assert await devnet.chain.credits_of(rider.miner_address) == 0
        assert not _any_trace_left(tmp_path)  # answered: each miner deleted its trace
    finally:
        await validator.close()
        for nonces in nonce_stores:
            nonces.close()
        await devnet.close()
