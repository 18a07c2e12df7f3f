"""The devnet's chain: eth-tester over py-evm, behind the same transport as a real node.

Every eth-tester call is synchronous and CPU-bound (py-evm executes in Python), so all of them
run on one dedicated worker thread, never on the event loop; one thread also serialises access
to the in-memory chain, which is not thread-safe. Each accepted raw transaction is appended to
the fsynced `TxLog` before the send returns, and replayed at open: the devnet survives an app
restart with the same hashes, nonces and contract address.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from eth_tester import EthereumTester, PyEVMBackend
from eth_tester.exceptions import TransactionFailed, TransactionNotFound
from eth_utils import to_checksum_address

from r3mes_desktop.chain.abi import decode_revert
from r3mes_desktop.chain.transport import CallReverted, TxRejected, rejection_kind
from r3mes_desktop.devnet.txlog import TxLog

T = TypeVar("T")

DESCRIPTION = "embedded devnet"
CALL_SENDER = "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf"  # genesis account of test key 0x…01


def _single_run_estimate(state: Any, transaction: Any) -> int:
    """Gas estimate from one execution at the block gas limit (intrinsic + used + refunds).

    py-evm's default estimator bisects (about 20 executions per estimate), which made it the
    devnet's dominant cost; the client adds its own margin on top of the estimate.
    """
    from eth.vm.spoof import SpoofTransaction

    probe = SpoofTransaction(transaction, gas=state.gas_limit, gas_price=0)
    snapshot = state.snapshot()
    try:
        computation = state.apply_transaction(probe)
        if computation.is_error:
            raise computation.error
        execution = computation.get_gas_used() + computation.get_gas_refund()
        return int(transaction.intrinsic_gas + execution)
    finally:
        state.revert(snapshot)


def _build_tester() -> tuple[EthereumTester, PyEVMBackend]:
    from eth_tester.backends.pyevm.main import ShanghaiVM

    # Shanghai rules, the same the contract is compiled for and ganache runs.
    backend = PyEVMBackend(vm_configuration=((0, ShanghaiVM),))
    backend.chain.gas_estimator = staticmethod(_single_run_estimate)
    return EthereumTester(backend), backend


class DevnetEvm:
    """A `ChainTransport` over an in-process EVM whose state is rebuilt from a tx log."""

    def __init__(self, log_path: Path) -> None:
        self._log_path = log_path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="devnet-evm")
        self._tester: EthereumTester | None = None
        self._backend: PyEVMBackend | None = None
        self._log: TxLog | None = None
        self.replayed = 0

    @classmethod
    async def open(cls, log_path: Path) -> DevnetEvm:
        evm = cls(log_path)
        await evm._run(evm._open_sync)
        return evm

    def _open_sync(self) -> None:
        self._tester, self._backend = _build_tester()
        self._log = TxLog(self._log_path)
        for raw in self._log.records():
            self._tester.send_raw_transaction("0x" + raw.hex())
            self.replayed += 1

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args))

    @property
    def tester(self) -> EthereumTester:
        assert self._tester is not None, "devnet not open"
        return self._tester

    @property
    def funded_keys(self) -> list[bytes]:
        """Private keys of eth-tester's pre-funded genesis accounts (public test keys)."""
        assert self._backend is not None, "devnet not open"
        return [key.to_bytes() for key in self._backend.account_keys]

    @property
    def description(self) -> str:
        return DESCRIPTION

    async def chain_id(self) -> int:
        return int(await self._run(lambda: self.tester.backend.chain.chain_id))

    async def get_code(self, address: str) -> bytes:
        code = await self._run(self.tester.get_code, to_checksum_address(address))
        return bytes.fromhex(str(code)[2:])

    async def nonce(self, address: str) -> int:
        return int(await self._run(self.tester.get_nonce, to_checksum_address(address)))

    async def balance(self, address: str) -> int:
        return int(await self._run(self.tester.get_balance, to_checksum_address(address)))

    async def fee_params(self) -> tuple[int, int]:
        block = await self._run(self.tester.get_block_by_number, "latest")
        base_fee = int(block["base_fee_per_gas"])
        tip = 10**9
        return 2 * base_fee + tip, tip

    async def estimate_gas(self, tx: dict[str, Any]) -> int:
        return int(await self._run(self._reverting, self.tester.estimate_gas, _tester_tx(tx)))

    async def call(self, tx: dict[str, Any]) -> bytes:
        result = await self._run(self._reverting, self.tester.call, _tester_tx(tx))
        return bytes.fromhex(str(result)[2:])

    @staticmethod
    def _reverting(fn: Callable[[dict[str, Any]], T], tx: dict[str, Any]) -> T:
        try:
            return fn(tx)
        except TransactionFailed as exc:
            payload: Any = exc.args[0] if exc.args else None
            if isinstance(payload, Exception) and payload.args:  # py-evm's Revert(data)
                payload = payload.args[0]
            reason = decode_revert(payload) if isinstance(payload, bytes) else None
            text = f"execution reverted: {reason}" if reason else str(payload)
            if reason is None:
                match = re.search(r"execution reverted:?\s*(.*)$", text)
                reason = match.group(1).strip() if match and match.group(1) else None
            raise CallReverted(reason, text) from None

    async def send_raw(self, raw: bytes) -> str:
        return await self._run(self._send_sync, raw)

    def _send_sync(self, raw: bytes) -> str:
        from eth_account import Account

        tx_hash = "0x" + _keccak(raw).hex()
        try:
            sender = Account.recover_transaction(raw)
        except Exception:
            raise TxRejected("invalid_signature", "invalid signature or encoding") from None
        try:
            self.tester.get_transaction_by_hash(tx_hash)
        except TransactionNotFound:
            pass
        else:
            raise TxRejected("already_known", f"already known: {tx_hash}")
        try:
            result = self.tester.send_raw_transaction("0x" + raw.hex())
        except Exception as exc:
            text = str(exc)
            match = re.search(r"Expected (\d+), but got (\d+)", text)
            if match and int(match.group(2)) < int(match.group(1)):
                raise TxRejected("nonce_too_low", f"nonce too low: {text}") from None
            if match:
                raise TxRejected(
                    "nonce_gap", f"nonce ahead of the account ({sender}): {text}"
                ) from None
            raise TxRejected(rejection_kind(text), text) from None
        assert self._log is not None
        self._log.append(raw)
        return str(result).lower()

    async def receipt(self, tx_hash: str) -> dict[str, Any] | None:
        def get() -> dict[str, Any] | None:
            try:
                r = self.tester.get_transaction_receipt(tx_hash)
            except TransactionNotFound:
                return None
            if r.get("block_number") is None:
                return None
            return {
                "status": int(r["status"]),
                "blockNumber": int(r["block_number"]),
                "transactionHash": str(r["transaction_hash"]).lower(),
            }

        return await self._run(get)

    async def transaction(self, tx_hash: str) -> dict[str, Any] | None:
        def get() -> dict[str, Any] | None:
            try:
                t = self.tester.get_transaction_by_hash(tx_hash)
            except TransactionNotFound:
                return None
            data = t.get("data") or t.get("input") or "0x"
            return {
                "from": t["from"],
                "to": t["to"],
                "data": bytes.fromhex(str(data)[2:]),
                "blockNumber": t.get("block_number"),
            }

        return await self._run(get)

    async def close(self) -> None:
        if self._log is not None:
            await self._run(self._log.close)
            self._log = None
        self._executor.shutdown(wait=True)


def _keccak(data: bytes) -> bytes:
    from eth_utils import keccak

    return bytes(keccak(data))


def _tester_tx(tx: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"from": CALL_SENDER}  # eth-tester insists on a funded sender
    for key, value in tx.items():
        if isinstance(value, bytes):
            out[key] = "0x" + value.hex()
        elif key in ("from", "to") and isinstance(value, str):
            out[key] = to_checksum_address(value)
        else:
            out[key] = value
    return out
