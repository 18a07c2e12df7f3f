"""The devnet's EVM runs in a child process: off the app's GIL, gone with its owner,
replaced (by replaying its log) when it dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import psutil
import pytest
from eth_account import Account

from r3mes_desktop.adapters.chain.transport import TxRejected
from r3mes_desktop.adapters.devnet.evm import DevnetEvm
from r3mes_desktop.core.errors import NetworkError

OWNER = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from r3mes_desktop.adapters.devnet.evm import DevnetEvm

    async def main():
        evm = await DevnetEvm.open(Path(sys.argv[1]) / "chain.log")
        await evm.chain_id()
        heavy = sorted(m for m in ("eth_tester", "eth.vm") if m in sys.modules)
        print(evm._process.pid, ",".join(heavy) or "-", flush=True)
        await asyncio.Event().wait()  # until killed

    if __name__ == "__main__":
        asyncio.run(main())
    """
)


def _transfer(evm: DevnetEvm, nonce: int, base_fee_tip: tuple[int, int], chain_id: int) -> bytes:
    key = evm.funded_keys[0]
    max_fee, tip = base_fee_tip
    signed = Account.from_key(key).sign_transaction(
        {
            "type": 2,
            "chainId": chain_id,
            "nonce": nonce,
            "to": Account.from_key(evm.funded_keys[1]).address,
            "value": 1,
            "gas": 21_000,
            "maxFeePerGas": max_fee,
            "maxPriorityFeePerGas": tip,
        }
    )
    return bytes(signed.raw_transaction)


def test_a_killed_owner_leaves_no_evm_process_behind(tmp_path) -> None:
    """SIGKILL gives the owner no chance to clean up; the pipe's EOF ends the child."""
    script = tmp_path / "owner.py"
    script.write_text(OWNER, encoding="utf-8")
    owner = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=os.getcwd(),
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    try:
        assert owner.stdout is not None
        evm_pid, heavy = owner.stdout.readline().split()
        child = psutil.Process(int(evm_pid))
        assert child.ppid() == owner.pid and child.is_running()
        assert heavy == "-", f"the owner imported the EVM itself: {heavy}"
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait(30)
        if owner.stdout is not None:
            owner.stdout.close()
    child.wait(timeout=30)  # raises TimeoutExpired if it outlived its owner
    assert not child.is_running()


async def test_a_dead_evm_process_fails_one_call_then_comes_back_from_its_log(tmp_path) -> None:
    evm = await DevnetEvm.open(tmp_path / "chain.log")
    try:
        sender = Account.from_key(evm.funded_keys[0]).address
        chain_id, fees = await evm.chain_id(), await evm.fee_params()
        tx_hash = await evm.send_raw(_transfer(evm, 0, fees, chain_id))
        assert evm._process is not None
        evm._process.kill()
        with pytest.raises(NetworkError, match="EVM process exited during nonce"):
            await evm.nonce(sender)
        assert await evm.nonce(sender) == 1  # a fresh process replayed the transfer
        assert evm.starts == 2 and evm.replayed == 1
        receipt = await evm.receipt(tx_hash)
        assert receipt is not None and receipt["status"] == 1
        with pytest.raises(TxRejected) as refused:  # the node's refusal crosses the pipe
            await evm.send_raw(_transfer(evm, 0, fees, chain_id))
        assert refused.value.kind == "already_known"
    finally:
        await evm.close()
    assert evm._process is None
