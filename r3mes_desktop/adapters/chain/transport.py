"""What the chain client needs from a node, and the JSON-RPC implementation of it.

Two transports implement `ChainTransport`: `RpcTransport` (a real node over HTTP through
web3's AsyncHTTPProvider) and the devnet's EVM (in a child process). Both return plain
Python values and raise classified errors whose message says which endpoint failed and how,
so the client above them is transport-agnostic. Node responses are validated here: a hostile
or broken node gets a NetworkError naming the URL, never an AttributeError three layers up.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Protocol

import aiohttp
from web3 import AsyncHTTPProvider
from web3.types import RPCEndpoint

from r3mes_desktop.adapters.chain.abi import decode_revert
from r3mes_desktop.core.errors import (
    AuthenticationError,
    ErrorCategory,
    NetworkError,
    PermanentError,
    R3mesError,
    TimeoutNetworkError,
    ValidationError,
    category_for_status,
)
from r3mes_desktop.support.redact import redact_url

SERVICE = "chain"


class TxRejected(ValidationError):
    """The node refused a raw transaction; `kind` says why (see `rejection_kind`).

    A ValidationError subclass because it is the node's answer, not a fault: endpoint
    fallback and retry pass it through untouched and the client maps it by `kind`.
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message, service=SERVICE)
        self.kind = kind


class CallReverted(ValidationError):
    """An eth_call / eth_estimateGas hit a revert; `reason` is the decoded string if any."""

    def __init__(self, reason: str | None, message: str) -> None:
        super().__init__(message, service=SERVICE)
        self.reason = reason


_REJECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    # Order matters: "replacement transaction underpriced" must not read as a bare nonce text.
    (
        "already_known",
        (
            "already known",
            "known transaction",
            "already imported",
            "existing tx with same hash",  # erigon
            "alreadyknown",  # nethermind
        ),
    ),
    (
        "underpriced",
        (
            "underpriced",  # geth, erigon, anvil, ganache, hardhat ("Replacement transaction ...")
            "fee cap less than block base fee",
            "max fee per gas less",
            "could not replace existing tx",  # erigon
            "insufficient gas price to replace",  # reth, anvil
            "replacementnotallowed",  # nethermind
            "feetoolowtocompete",  # nethermind
            "fee too low",
        ),
    ),
    (
        "nonce_too_low",
        (
            "nonce too low",  # geth, erigon, anvil, hardhat, ganache 7
            "nonce is too low",
            "oldnonce",  # nethermind
            "nonce has already been used",
        ),
    ),
    (
        "nonce_gap",
        (
            "nonce too high",  # geth, erigon, anvil, hardhat
            "nonce ahead of the account",
            "noncegap",  # nethermind
            "noncetoofarinfuture",  # nethermind
            "nonce too distant",  # erigon
            "nonce gap",
        ),
    ),
    ("insufficient_funds", ("insufficient funds", "sender doesn't have enough funds")),
    ("invalid_signature", ("invalid signature", "invalid sender", "invalid chain id")),
)

_GANACHE_NONCE = re.compile(
    r"doesn't have the correct nonce\. account has nonce of: (\d+) tx has nonce of: (\d+)"
)
"""ganache says neither "low" nor "high": the two numbers tell which."""


def rejection_kind(message: str) -> str:
    """Map a node's refusal text to a kind (`other` when unrecognised).

    Every node words the same refusals its own way; all of them must land on one kind, or a
    consumed nonce reads as a bad input and strands the round (tests/unit/adapters/chain/
    test_rejection_wordings.py holds each node's text).
    """
    lowered = message.lower()
    ganache = _GANACHE_NONCE.search(lowered)
    if ganache is not None:
        account_nonce, tx_nonce = int(ganache.group(1)), int(ganache.group(2))
        return "nonce_too_low" if tx_nonce < account_nonce else "nonce_gap"
    for kind, needles in _REJECTIONS:
        if any(n in lowered for n in needles):
            return kind
    return "other"


class ChainTransport(Protocol):
    """A node as the client sees it; every method raises classified errors."""

    @property
    def description(self) -> str: ...

    async def chain_id(self) -> int: ...
    async def get_code(self, address: str) -> bytes: ...
    async def nonce(self, address: str) -> int:
        """Transaction count including pending transactions."""
        ...

    async def confirmed_nonce(self, address: str) -> int:
        """Transaction count of the latest block: nonces below it are taken for good."""
        ...

    async def fee_params(self) -> tuple[int, int]:
        """(max fee per gas, priority fee per gas) for a type-2 transaction."""
        ...

    async def estimate_gas(self, tx: dict[str, Any]) -> int: ...
    async def call(self, tx: dict[str, Any]) -> bytes: ...
    async def send_raw(self, raw: bytes) -> str: ...
    async def receipt(self, tx_hash: str) -> dict[str, Any] | None:
        """{"status": 0|1, "blockNumber": int, "transactionHash": str} or None."""
        ...

    async def transaction(self, tx_hash: str) -> dict[str, Any] | None: ...
    async def balance(self, address: str) -> int: ...
    async def block(self, number: int | None = None) -> dict[str, Any] | None:
        """{"number", "hash" (0x hex), "timestamp"} of a block (None: the latest), or None
        when it is not mined yet: validators draw their samples from a block's hash."""
        ...

    async def close(self) -> None: ...


def _hex_int(value: Any, what: str, where: str) -> int:
    if isinstance(value, str) and re.fullmatch(r"0x[0-9a-fA-F]{1,64}", value):
        return int(value, 16)
    raise NetworkError(
        f"{where} returned a malformed {what}: expected a hex quantity, got {str(value)[:60]!r}",
        service=SERVICE,
    )


def _hex_bytes(value: Any, what: str, where: str) -> bytes:
    if isinstance(value, str) and re.fullmatch(r"0x([0-9a-fA-F]{2})*", value):
        return bytes.fromhex(value[2:])
    raise NetworkError(
        f"{where} returned malformed {what}: expected 0x-hex bytes, got {str(value)[:60]!r}",
        service=SERVICE,
    )


class RpcTransport:
    """One JSON-RPC endpoint through AsyncWeb3's AsyncHTTPProvider.

    No web3-level retries: the caller of the chain client's methods owns retry, breaker and
    the per-call timeout. `timeout_s` is the socket timeout only, so a hung node ends."""

    def __init__(self, url: str, *, timeout_s: float = 15.0) -> None:
        self.url = url
        self._where = f"chain RPC {redact_url(url)}"
        self._provider = AsyncHTTPProvider(
            url,
            request_kwargs={"timeout": aiohttp.ClientTimeout(total=timeout_s)},
            exception_retry_configuration=None,
        )

    @property
    def description(self) -> str:
        return redact_url(self.url)

    async def _request(self, method: str, params: list[Any]) -> Any:
        try:
            response = await self._provider.make_request(RPCEndpoint(method), params)
        except R3mesError:
            raise
        except TimeoutError:
            raise TimeoutNetworkError(
                f"{self._where} did not answer {method} in time", service=SERVICE
            ) from None
        except aiohttp.ClientResponseError as exc:
            raise _status_error(self._where, method, exc.status) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise NetworkError(
                f"{self._where} is unreachable ({method}): {type(exc).__name__}: {exc}",
                service=SERVICE,
            ) from None
        except ValueError as exc:  # JSON decoding of a garbage body
            raise NetworkError(
                f"{self._where} returned a malformed response to {method}: {exc}",
                service=SERVICE,
            ) from None
        except Exception as exc:  # web3 HTTP-layer errors carry a status or are opaque
            status = getattr(getattr(exc, "response", None), "status", None)
            if isinstance(status, int):
                raise _status_error(self._where, method, status) from None
            raise NetworkError(
                f"{self._where} failed on {method}: {type(exc).__name__}: {exc}", service=SERVICE
            ) from None
        if not isinstance(response, dict):
            raise NetworkError(
                f"{self._where} returned a malformed response to {method}: not a JSON object",
                service=SERVICE,
            )
        error = response.get("error")
        if error is not None:
            if not isinstance(error, dict):
                error = {"message": str(error)}
            raise _RpcFailure(str(error.get("message", "")), error.get("data"))
        if "result" not in response:
            raise NetworkError(
                f"{self._where} returned a malformed response to {method}: no result",
                service=SERVICE,
            )
        return response["result"]

    async def chain_id(self) -> int:
        return _hex_int(await self._checked("eth_chainId", []), "chain id", self._where)

    async def get_code(self, address: str) -> bytes:
        return _hex_bytes(
            await self._checked("eth_getCode", [address, "latest"]), "code", self._where
        )

    async def nonce(self, address: str) -> int:
        result = await self._checked("eth_getTransactionCount", [address, "pending"])
        return _hex_int(result, "nonce", self._where)

    async def confirmed_nonce(self, address: str) -> int:
        result = await self._checked("eth_getTransactionCount", [address, "latest"])
        return _hex_int(result, "nonce", self._where)

    async def balance(self, address: str) -> int:
        result = await self._checked("eth_getBalance", [address, "latest"])
        return _hex_int(result, "balance", self._where)

    async def fee_params(self) -> tuple[int, int]:
        block = await self._checked("eth_getBlockByNumber", ["latest", False])
        if not isinstance(block, dict):
            raise NetworkError(f"{self._where} returned a malformed latest block", service=SERVICE)
        base_fee = _hex_int(block.get("baseFeePerGas", "0x0"), "base fee", self._where)
        try:
            tip = _hex_int(
                await self._checked("eth_maxPriorityFeePerGas", []), "priority fee", self._where
            )
        except NetworkError:
            raise
        except R3mesError:
            tip = 10**9  # nodes without the method: 1 gwei
        return 2 * base_fee + tip, tip

    async def estimate_gas(self, tx: dict[str, Any]) -> int:
        result = await self._reverting("eth_estimateGas", [_rpc_tx(tx)])
        return _hex_int(result, "gas estimate", self._where)

    async def call(self, tx: dict[str, Any]) -> bytes:
        return _hex_bytes(
            await self._reverting("eth_call", [_rpc_tx(tx), "latest"]), "call result", self._where
        )

    async def send_raw(self, raw: bytes) -> str:
        try:
            result = await self._request("eth_sendRawTransaction", ["0x" + raw.hex()])
        except _RpcFailure as failure:
            raise TxRejected(rejection_kind(failure.message), failure.message) from None
        if not isinstance(result, str) or not re.fullmatch(r"0x[0-9a-fA-F]{64}", result):
            raise NetworkError(
                f"{self._where} returned a malformed transaction hash: {str(result)[:80]!r}",
                service=SERVICE,
            )
        return result.lower()

    async def receipt(self, tx_hash: str) -> dict[str, Any] | None:
        result = await self._checked("eth_getTransactionReceipt", [tx_hash])
        if result is None:
            return None
        if not isinstance(result, dict):
            raise NetworkError(f"{self._where} returned a malformed receipt", service=SERVICE)
        return {
            "status": _hex_int(result.get("status"), "receipt status", self._where),
            "blockNumber": _hex_int(result.get("blockNumber"), "receipt block", self._where),
            "transactionHash": str(result.get("transactionHash", tx_hash)).lower(),
        }

    async def transaction(self, tx_hash: str) -> dict[str, Any] | None:
        result = await self._checked("eth_getTransactionByHash", [tx_hash])
        if result is None:
            return None
        if not isinstance(result, dict):
            raise NetworkError(f"{self._where} returned a malformed transaction", service=SERVICE)
        return {
            "from": result.get("from"),
            "to": result.get("to"),
            "data": _hex_bytes(result.get("input", "0x"), "input", self._where),
            "blockNumber": None
            if result.get("blockNumber") is None
            else _hex_int(result.get("blockNumber"), "block", self._where),
        }

    async def block(self, number: int | None = None) -> dict[str, Any] | None:
        tag = "latest" if number is None else hex(number)
        result = await self._checked("eth_getBlockByNumber", [tag, False])
        if result is None:
            return None
        if not isinstance(result, dict):
            raise NetworkError(f"{self._where} returned a malformed block", service=SERVICE)
        return {
            "number": _hex_int(result.get("number"), "block number", self._where),
            "hash": str(result.get("hash", "")).lower(),
            "timestamp": _hex_int(result.get("timestamp"), "block timestamp", self._where),
        }

    async def close(self) -> None:
        disconnect = getattr(self._provider, "disconnect", None)
        if disconnect is not None:
            await disconnect()

    async def _checked(self, method: str, params: list[Any]) -> Any:
        try:
            return await self._request(method, params)
        except _RpcFailure as failure:
            raise NetworkError(
                f"{self._where} answered {method} with an error: {failure.message[:200]}",
                service=SERVICE,
            ) from None

    async def _reverting(self, method: str, params: list[Any]) -> Any:
        try:
            return await self._request(method, params)
        except _RpcFailure as failure:
            reason = decode_revert(failure.data) if isinstance(failure.data, str) else None
            if reason is None and isinstance(failure.data, dict):  # ganache nests it
                inner = failure.data.get("result") or failure.data.get("data")
                reason = decode_revert(inner) if isinstance(inner, str) else None
            if reason is None:
                match = re.search(r"revert(?:ed)?:?\s*(.+)$", failure.message)
                reason = match.group(1).strip() if match else None
            if reason is None and "revert" not in failure.message.lower():
                kind = rejection_kind(failure.message)
                if kind == "insufficient_funds":
                    raise TxRejected(kind, failure.message) from None
                raise NetworkError(
                    f"{self._where} answered {method} with an error: {failure.message[:200]}",
                    service=SERVICE,
                ) from None
            raise CallReverted(reason, failure.message) from None


class _RpcFailure(Exception):
    def __init__(self, message: str, data: Any) -> None:
        super().__init__(message)
        self.message = message
        self.data = data


_STATUS_CLASS: dict[ErrorCategory, type[R3mesError]] = {
    ErrorCategory.NETWORK: NetworkError,
    ErrorCategory.AUTHENTICATION: AuthenticationError,
    ErrorCategory.VALIDATION: ValidationError,
    ErrorCategory.PERMANENT: PermanentError,
}


class FallbackTransport:
    """Several RPC URLs as one transport: a network failure moves on to the next URL
    (core.resilience.FallbackEndpoints); a node's answer (revert, rejection) is final."""

    def __init__(self, transports: Sequence[ChainTransport], *, bus: Any = None) -> None:
        from r3mes_desktop.core.resilience import FallbackEndpoints

        self.transports = list(transports)
        self._endpoints: FallbackEndpoints[ChainTransport] = FallbackEndpoints(
            transports, service=SERVICE, bus=bus
        )

    @property
    def description(self) -> str:
        return ", ".join(t.description for t in self.transports)

    async def chain_id(self) -> int:
        return await self._endpoints.call(lambda t: t.chain_id())

    async def get_code(self, address: str) -> bytes:
        return await self._endpoints.call(lambda t: t.get_code(address))

    async def nonce(self, address: str) -> int:
        return await self._endpoints.call(lambda t: t.nonce(address))

    async def confirmed_nonce(self, address: str) -> int:
        return await self._endpoints.call(lambda t: t.confirmed_nonce(address))

    async def balance(self, address: str) -> int:
        return await self._endpoints.call(lambda t: t.balance(address))

    async def fee_params(self) -> tuple[int, int]:
        return await self._endpoints.call(lambda t: t.fee_params())

    async def estimate_gas(self, tx: dict[str, Any]) -> int:
        return await self._endpoints.call(lambda t: t.estimate_gas(tx))

    async def call(self, tx: dict[str, Any]) -> bytes:
        return await self._endpoints.call(lambda t: t.call(tx))

    async def send_raw(self, raw: bytes) -> str:
        return await self._endpoints.call(lambda t: t.send_raw(raw))

    async def receipt(self, tx_hash: str) -> dict[str, Any] | None:
        return await self._endpoints.call(lambda t: t.receipt(tx_hash))

    async def transaction(self, tx_hash: str) -> dict[str, Any] | None:
        return await self._endpoints.call(lambda t: t.transaction(tx_hash))

    async def block(self, number: int | None = None) -> dict[str, Any] | None:
        return await self._endpoints.call(lambda t: t.block(number))

    async def close(self) -> None:
        for t in self.transports:
            await t.close()


def _status_error(where: str, method: str, status: int) -> R3mesError:
    cls = _STATUS_CLASS.get(category_for_status(status), NetworkError)
    return cls(f"{where} answered {method} with HTTP {status}", service=SERVICE)


def _rpc_tx(tx: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tx.items():
        if isinstance(value, bytes):
            out[key] = "0x" + value.hex()
        elif isinstance(value, int):
            out[key] = hex(value)
        else:
            out[key] = value
    return out
