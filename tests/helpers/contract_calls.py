"""Plain contract calls for the contract tests: a signed transaction and a view."""

from __future__ import annotations

from typing import Any

from r3mes_desktop.adapters.chain.abi import decode_output, encode_call


async def send_tx(evm: Any, account: Any, to: str, data: bytes) -> int:
    """Estimate (surfacing the revert reason), then send and return the receipt status."""
    await evm.estimate_gas({"from": account.address, "to": to, "data": data})
    max_fee, tip = await evm.fee_params()
    signed = account.sign_transaction({
        "type": 2, "chainId": await evm.chain_id(), "nonce": await evm.nonce(account.address),
        "to": to, "data": data, "gas": 400_000, "maxFeePerGas": max_fee,
        "maxPriorityFeePerGas": tip,
    })  # fmt: skip
    receipt = await evm.receipt(await evm.send_raw(bytes(signed.raw_transaction)))
    return int(receipt["status"])


async def view(evm: Any, operator: Any, name: str, *args: Any) -> Any:
    data = await evm.call({"to": operator.contract_address, "data": encode_call(name, *args)})
    return decode_output(name, data)
