"""Deploying R3mesRounds to any EVM node, exactly once.

The contract's address follows from the deployer and its nonce, so the signed creation
transaction, its hash and the address it will create are written to an intent file before
the broadcast. Run again (after a crash, a timeout, a lost reply), the same bytes are sent
again, never a second contract: the node either has them, mines them, or proves their nonce
taken by something else, which is then reported instead of guessed around.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rlp
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from r3mes_desktop.adapters.chain import artifact
from r3mes_desktop.adapters.chain.transport import ChainTransport, TxRejected
from r3mes_desktop.core.clock import SYSTEM_CLOCK, Clock
from r3mes_desktop.core.errors import PermanentError, TimeoutNetworkError

log = logging.getLogger(__name__)
DEPLOY_GAS = 3_000_000


@dataclass(frozen=True)
class Deployment:
    address: str
    tx_hash: str
    block_number: int
    already: bool  # found deployed by an earlier run of the same intent


def contract_address_for(deployer: str, nonce: int) -> str:
    raw = keccak(rlp.encode([bytes.fromhex(deployer.removeprefix("0x")), nonce]))[12:]
    return str(to_checksum_address(raw))


async def deploy(
    transport: ChainTransport,
    account: LocalAccount,
    intent_path: Path,
    *,
    clock: Clock = SYSTEM_CLOCK,
    timeout_s: float = 120.0,
) -> Deployment:
    intent = _read(intent_path)
    if intent is None:
        intent = await _sign(transport, account)
        _write(intent_path, intent)
    address, tx_hash = intent["address"], intent["tx_hash"]
    if await transport.get_code(address):
        receipt = await transport.receipt(tx_hash)
        block = int(receipt["blockNumber"]) if receipt else 0
        return Deployment(address, tx_hash, block, already=True)
    try:
        await transport.send_raw(bytes.fromhex(intent["raw"]))
    except TxRejected as exc:
        if exc.kind != "already_known":
            if exc.kind == "nonce_too_low" and await transport.receipt(tx_hash) is None:
                raise PermanentError(
                    f"the deploy transaction's nonce {intent['nonce']} was used by another "
                    f"transaction of {account.address}; no contract is at {address}. Remove "
                    f"{intent_path} to sign a new deployment",
                    service="chain",
                ) from None
            if exc.kind != "nonce_too_low":
                raise
    deadline = clock.monotonic() + timeout_s
    while True:
        receipt = await transport.receipt(tx_hash)
        if receipt is not None:
            break
        if clock.monotonic() > deadline:
            raise TimeoutNetworkError(
                f"deploy transaction {tx_hash} not mined within {timeout_s:g}s; run again to "
                "keep waiting (the same transaction is re-sent)",
                service="chain",
            )
        await clock.sleep(1.0)
    if receipt["status"] != 1 or not await transport.get_code(address):
        raise PermanentError(f"deploy transaction {tx_hash} reverted", service="chain")
    log.info("deployed R3mesRounds at %s (tx %s)", address, tx_hash)
    return Deployment(address, tx_hash, int(receipt["blockNumber"]), already=False)


async def _sign(transport: ChainTransport, account: LocalAccount) -> dict[str, Any]:
    nonce = await transport.nonce(account.address)
    max_fee, tip = await transport.fee_params()
    tx: dict[str, Any] = {
        "type": 2,
        "chainId": await transport.chain_id(),
        "nonce": nonce,
        "data": artifact.load().bytecode,
        "value": 0,
        "gas": DEPLOY_GAS,
        "maxFeePerGas": max_fee,
        "maxPriorityFeePerGas": min(tip, max_fee),
    }
    signed = await asyncio.to_thread(account.sign_transaction, tx)
    return {
        "raw": bytes(signed.raw_transaction).hex(),
        "tx_hash": "0x" + bytes(signed.hash).hex().removeprefix("0x"),
        "nonce": nonce,
        "deployer": str(account.address),
        "address": contract_address_for(str(account.address), nonce),
    }


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    return data


def _write(path: Path, intent: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(intent, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
