"""The Runtime on real peers: anvil (chain RPC) and js-ipfs (IPFS API), the miner's own
encrypted keystore, a password given by the prompt hook. One round commits end to end."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import rlp
from eth_utils import keccak, to_checksum_address

from bench.chaos.peers import ANVIL_KEY0
from r3mes_desktop.adapters.chain import artifact
from r3mes_desktop.adapters.chain.keystore import Keystore
from r3mes_desktop.adapters.chain.transport import RpcTransport
from r3mes_desktop.adapters.devnet.operator import DevnetOperator, RoundTemplate
from r3mes_desktop.app.runtime import Runtime, RuntimeOptions
from r3mes_desktop.core.events import TransactionStateChanged
from r3mes_desktop.support.config import load_settings, updated

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]


async def _deploy(transport: RpcTransport) -> DevnetOperator:
    template = RoundTemplate(difficulty=16, steps=8, hyperparams={"preset": "tiny"})
    operator = DevnetOperator(transport, key=bytes.fromhex(ANVIL_KEY0[2:]), template=template)
    nonce = await transport.nonce(operator.address)
    operator.contract_address = to_checksum_address(
        keccak(rlp.encode([bytes.fromhex(operator.address[2:]), nonce]))[12:]
    )
    await operator._send(artifact.load().bytecode, to=None, gas=3_000_000)
    return operator


async def test_runtime_mines_a_round_on_anvil_and_jsipfs(
    anvil: str, jsipfs: str, tmp_path: Path
) -> None:
    operator_node = RpcTransport(anvil)
    operator = await _deploy(operator_node)
    data_dir = tmp_path / "data"
    keystore = Keystore(data_dir / "keys", scrypt_n=2**4)
    address = keystore.create("correct horse")
    await operator.fund(address)
    await operator.ensure_rounds(address)
    settings = updated(
        load_settings(),
        chain_rpc_urls=[anvil],
        chain_id=1337,
        contract_address=operator.contract_address,
        ipfs_api_address=jsipfs,
        pow_difficulty=16,
    )
    asked: list[str] = []

    async def prompt(who: str) -> str:
        asked.append(who)
        return "correct horse"

    runtime = Runtime(settings, options=RuntimeOptions(data_dir=data_dir, password_prompt=prompt))
    committed = asyncio.Event()
    first: list[str] = []

    def on_event(event: Any) -> None:
        if isinstance(event, TransactionStateChanged) and event.new_state == "committed":
            first.append(event.transaction_id)
            committed.set()

    runtime.bus.subscribe(on_event)
    await runtime.open()
    try:
        assert asked == [address]
        assert runtime.chain.miner_address == address
        await runtime.miner.start()
        await asyncio.wait_for(committed.wait(), timeout=240)
        info = await runtime.chain_info()
        assert info["network"] == "chain 1337" and info["account"] == address
        await runtime.miner.stop()  # the next of the 3 open rounds may be uploading already
        cid = (await runtime.coordinator.status(first[0])).cid
        assert cid is not None and cid in await runtime.store.pins()
        pinned = len(await runtime.store.pins())
        assert (await runtime.ipfs_info()).endswith(f"· {pinned} pinned")
    finally:
        await runtime.close()
        await operator_node.close()
