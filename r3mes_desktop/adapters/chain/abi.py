"""Offline encoding/decoding of R3mesRounds calls, independent of any provider.

The client talks to two transports (a JSON-RPC node and the in-process devnet), so contract
calls are encoded here once and sent as plain bytes; results and revert data are decoded here.
"""

from __future__ import annotations

import functools
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_utils.abi import get_abi_output_types
from web3 import Web3

from r3mes_desktop.adapters.chain import artifact

ERROR_SELECTOR = bytes.fromhex("08c379a0")  # Error(string)
PANIC_SELECTOR = bytes.fromhex("4e487b71")  # Panic(uint256)


@functools.cache
def _contract() -> Any:
    return Web3().eth.contract(abi=artifact.load().abi)


def encode_call(fn_name: str, *args: Any) -> bytes:
    """Calldata for `fn_name(*args)`."""
    return bytes.fromhex(_contract().encode_abi(fn_name, args=list(args))[2:])


def decode_output(fn_name: str, data: bytes) -> Any:
    """Decode a call's return data; single outputs are unwrapped."""
    fn = _contract().get_function_by_name(fn_name)
    values = abi_decode(get_abi_output_types(fn.abi), data)
    return values[0] if len(values) == 1 else values


def decode_call(data: bytes) -> tuple[str, dict[str, Any]]:
    """(function name, arguments) of calldata for this contract."""
    fn, args = _contract().decode_function_input(data)
    return fn.abi_element_name if hasattr(fn, "abi_element_name") else fn.fn_name, dict(args)


def decode_revert(data: bytes | str | None) -> str | None:
    """The reason string of Error(string) revert data; a short description for Panic."""
    if data is None:
        return None
    raw = (
        bytes.fromhex(data[2:] if data.startswith("0x") else data)
        if isinstance(data, str)
        else data
    )
    if raw.startswith(ERROR_SELECTOR):
        try:
            (reason,) = abi_decode(["string"], raw[4:])
        except Exception:
            return None
        return str(reason)
    if raw.startswith(PANIC_SELECTOR):
        try:
            (code,) = abi_decode(["uint256"], raw[4:])
        except Exception:
            return None
        return f"panic 0x{code:x}"
    return None
