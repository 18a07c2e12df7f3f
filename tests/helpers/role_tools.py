"""What the integration tests of the network roles share: running a role's CLI for its JSON,
a key file, and a signed transaction sent to a JSON-RPC node and waited for."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from eth_account import Account

from r3mes_desktop.adapters.chain.transport import RpcTransport


def cli(module: str, *args: str, env: dict[str, str] | None = None, timeout: float = 180) -> Any:
    """`python -m module --json args...`, which must exit 0; its JSON output."""
    done = subprocess.run(
        [sys.executable, "-m", module, "--json", *args],
        capture_output=True, timeout=timeout, env=env or dict(os.environ), check=False,
    )  # fmt: skip
    assert done.returncode == 0, (module, args, done.stdout[-2000:], done.stderr[-3000:])
    return json.loads(done.stdout.decode())


def key_file(path: Path, key: str) -> Path:
    path.write_text(key + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


async def send(url: str, key: str, to: str, *, data: bytes = b"", value: int = 0) -> None:
    """Sign with `key`, send to the node at `url`, and wait until it is mined (status 1)."""
    transport = RpcTransport(url)
    try:
        account = Account.from_key(key)
        max_fee, tip = await transport.fee_params()
        signed = account.sign_transaction({
            "type": 2, "chainId": await transport.chain_id(),
            "nonce": await transport.nonce(account.address), "to": to, "data": data,
            "value": value, "gas": 400_000, "maxFeePerGas": max_fee, "maxPriorityFeePerGas": tip,
        })  # fmt: skip
        tx_hash = await transport.send_raw(bytes(signed.raw_transaction))
        for _ in range(100):
            receipt = await transport.receipt(tx_hash)
            if receipt is not None:
                assert receipt["status"] == 1, receipt
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"{tx_hash} not mined")
    finally:
        await transport.close()
