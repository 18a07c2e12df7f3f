"""Services benchmark: devnet submissions/s vs raw eth-tester transfers/s, and IPFS add+pin
latency (p50/p95) on the devnet's local store and, when the npm peer is installed, js-ipfs.

Run: `.venv/bin/python -m bench.services`. Both chain figures come from this one run, so the
ratio says what our client stack (ABI encoding, estimate, durable nonces, receipt decoding,
and one ServiceCaller around each client call, as the saga makes them) costs on top of
py-evm itself.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from eth_account import Account
from eth_tester import EthereumTester, PyEVMBackend

from r3mes_desktop.adapters.devnet import Devnet
from r3mes_desktop.adapters.devnet.operator import RoundTemplate
from r3mes_desktop.adapters.ipfs.local_store import LocalContentStore
from r3mes_desktop.core.pow import is_valid_pow
from r3mes_desktop.core.resilience import ServiceCaller

N_TX = 40
N_ADD = 30
ADD_SIZE = 512 * 1024


def raw_transfers_per_s(n: int) -> float:
    tester = EthereumTester(PyEVMBackend())
    backend = tester.backend
    sender = Account.from_key(backend.account_keys[0].to_bytes())
    chain_id = backend.chain.chain_id
    raws = [
        sender.sign_transaction({
            "type": 2, "chainId": chain_id, "nonce": i, "to": "0x" + "22" * 20, "value": 1,
            "gas": 21_000, "maxFeePerGas": 10**11, "maxPriorityFeePerGas": 10**9,
        }).raw_transaction.hex()
        for i in range(n)
    ]  # fmt: skip
    start = time.perf_counter()
    for raw in raws:
        tester.send_raw_transaction("0x" + raw.removeprefix("0x"))
    return n / (time.perf_counter() - start)


async def devnet_submissions_per_s(n: int) -> float:
    caller = ServiceCaller(service="chain")
    with tempfile.TemporaryDirectory() as tmp:
        devnet = await Devnet.open(
            Path(tmp), template=RoundTemplate(difficulty=16, steps=1), keep_open=n,
            operator_interval_s=None, caller=caller,
        )  # fmt: skip
        rounds = await devnet.chain.open_rounds()
        work = []
        for i, spec in enumerate(rounds[:n]):
            ghash = i.to_bytes(32, "big")
            nonce = 0
            while not is_valid_pow(ghash, devnet.miner_address, spec.round_id, nonce, 16):
                nonce += 1
            work.append((spec.round_id, ghash, nonce))
        chain = devnet.chain
        start = time.perf_counter()
        for round_id, ghash, nonce in work:
            signed = await caller.call(
                "sign_submission", chain.sign_submission,
                round_id=round_id, cid="bafkbench", gradient_hash=ghash, pow_nonce=nonce,
            )  # fmt: skip
            await caller.call("broadcast", chain.broadcast, signed)
            await caller.call("wait_receipt", chain.wait_receipt, signed.tx_hash, timeout_s=30)
        elapsed = time.perf_counter() - start
        await devnet.close()
    return len(work) / elapsed


def _pcts(samples: list[float]) -> tuple[float, float]:
    qs = statistics.quantiles(samples, n=20)
    return statistics.median(samples) * 1000, qs[18] * 1000


async def add_latencies(store, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        data = os.urandom(ADD_SIZE)
        start = time.perf_counter()
        await store.add_and_pin(data)
        samples.append(time.perf_counter() - start)
    return samples


async def jsipfs_latencies(n: int) -> list[float] | None:
    from tests.integration import conftest as peers

    if not (peers.BIN / "jsipfs").exists():
        return None
    import contextlib

    from r3mes_desktop.adapters.ipfs.client import IpfsClient

    factory = contextlib.contextmanager(peers.jsipfs.__wrapped__)
    with tempfile.TemporaryDirectory() as tmp:

        class _Factory:
            def mktemp(self, name: str) -> Path:
                path = Path(tmp) / name
                path.mkdir()
                return path

        with factory(_Factory()) as address:
            client = IpfsClient(address)
            samples = await add_latencies(client, n)
            await client.close()
    return samples


async def main() -> int:
    raw = raw_transfers_per_s(N_TX * 3)
    subs = await devnet_submissions_per_s(N_TX)
    print(f"raw eth-tester transfers/s:   {raw:8.1f}")
    print(f"devnet submissions/s:         {subs:8.1f}  (full client path: estimate, sign,")
    print("                                          durable nonce, send, receipt)")
    print(f"ratio submissions/transfers:  {subs / raw:8.3f}")
    with tempfile.TemporaryDirectory() as tmp:
        local = await add_latencies(LocalContentStore(Path(tmp)), N_ADD)
    p50, p95 = _pcts(local)
    print(f"local store add+pin {ADD_SIZE // 1024} KiB:  p50 {p50:7.2f} ms  p95 {p95:7.2f} ms")
    remote = await jsipfs_latencies(N_ADD)
    if remote is None:
        print("js-ipfs add+pin: skipped (tests/peers not installed)")
    else:
        r50, r95 = _pcts(remote)
        print(f"js-ipfs add+pin {ADD_SIZE // 1024} KiB:      p50 {r50:7.2f} ms  p95 {r95:7.2f} ms")
        print(f"ratio js-ipfs/local p50:      {r50 / p50:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
