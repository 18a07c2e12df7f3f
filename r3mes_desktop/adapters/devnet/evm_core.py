"""The devnet's chain itself: eth-tester over py-evm, rebuilt from its transaction log.

Synchronous and CPU-bound (py-evm executes in pure Python), so it runs only inside the
devnet's EVM process (`evm_process`): in the app's own process it held the GIL for tens of
milliseconds per transaction and stalled the window. Every method takes and returns plain
JSON values (hex strings for bytes), the wire format of that process. Each accepted raw
transaction is appended to the fsynced `TxLog` before the send returns, and replayed at
open: the devnet survives a restart with the same hashes, nonces and contract address.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from eth_tester import EthereumTester, PyEVMBackend
from eth_tester.exceptions import BlockNotFound, TransactionFailed
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from r3mes_desktop.adapters.chain.abi import decode_revert
from r3mes_desktop.adapters.chain.transport import CallReverted, TxRejected, rejection_kind
from r3mes_desktop.adapters.devnet.txlog import TxLog

T = TypeVar("T")
log = logging.getLogger(__name__)


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


SNAPSHOT_EVERY = 100
"""Log records executed since the last snapshot before a new one is written (a write costs
a few milliseconds per 100 logged transactions; a start replays at most this many)."""


def _hex(value: bytes | str) -> str:
    """eth-tester gives hashes as 0x strings (newer) or bytes (older)."""
    return value.lower() if isinstance(value, str) else "0x" + bytes(value).hex()


def snapshot_path(log_path: Path) -> Path:
    return log_path.with_name(log_path.name + ".snapshot")


class EvmCore:
    """The in-memory chain plus its log; `tx` arguments are eth-tester dicts (hex data).

    At open the state comes from the latest intact snapshot of the log's prefix (see
    `snapshot`), then the rest of the log is replayed; `restored` and `replayed` say how
    many records each covered. Every `snapshot_every` logged transactions, and at close, a
    new snapshot is written (only of a state built from exactly the logged records).
    """

    def __init__(self, log_path: Path, *, snapshot_every: int | None = SNAPSHOT_EVERY) -> None:
        self.tester, self._backend = _build_tester()
        self._log = TxLog(log_path)
        self._log_path = log_path
        self._snapshot_path = snapshot_path(log_path)
        self._snapshot_every = snapshot_every
        self._diverged = False  # executed a transaction the log failed to record
        entries = self._log.records_with_ends()
        self.restored = self._restore(len(entries)) if snapshot_every else 0
        self.replayed = 0
        for raw, _ in entries[self.restored :]:
            self.tester.send_raw_transaction("0x" + raw.hex())
            self.replayed += 1
        self._records = len(entries)
        self._snapshot_records = self.restored
        self._snapshot_if_due()

    # -- snapshots ----------------------------------------------------------------------------
    def _kv(self) -> dict[bytes, bytes]:
        db = self._backend.chain.chaindb.db  # AtomicDB over the MemoryDB that holds it all
        store: dict[bytes, bytes] = db.wrapped_db.kv_store
        return store

    def _restore(self, logged: int) -> int:
        """Load the latest usable snapshot; returns the log records it covers (0: none)."""
        from eth.db.atomic import AtomicDB
        from eth.db.backends.memory import MemoryDB

        from r3mes_desktop.adapters.devnet import snapshot

        snap = snapshot.read(self._snapshot_path, self._log_path)
        if snap is None:
            return 0
        if snap.records > logged:  # cannot happen with a checked log prefix; be safe
            log.warning("devnet snapshot covers more than the log holds: replaying it all")
            return 0
        chain_class = type(self._backend.chain)
        chain = chain_class(AtomicDB(MemoryDB(snap.entries)))
        if chain.get_canonical_head().hash != snap.head:
            log.warning("devnet snapshot head mismatch: replaying the whole log")
            return 0
        chain.gas_estimator = staticmethod(_single_run_estimate)
        self._backend.chain = chain
        return snap.records

    def snapshot(self) -> bool:
        """Write a snapshot of the state now (all logged records); False if the state is
        not exactly the log's (a record failed to write) or there is nothing new."""
        from r3mes_desktop.adapters.devnet import snapshot

        if self._diverged or not self._snapshot_every or self._records == self._snapshot_records:
            return False
        snapshot.write(
            self._snapshot_path,
            self._kv(),
            records=self._records,
            log_path=self._log_path,
            log_offset=self._log.end,
            head=bytes(self._backend.chain.get_canonical_head().hash),
        )
        self._snapshot_records = self._records
        return True

    def _snapshot_if_due(self) -> None:
        every = self._snapshot_every
        if every and self._records - self._snapshot_records >= every:
            try:
                self.snapshot()
            except OSError as exc:  # a full disk: the log still holds everything
                log.warning("devnet snapshot not written: %s", exc)

    def funded_keys(self) -> list[str]:
        """Private keys of eth-tester's pre-funded genesis accounts (public test keys)."""
        return [key.to_bytes().hex() for key in self._backend.account_keys]

    def chain_id(self) -> int:
        return int(self.tester.backend.chain.chain_id)

    def get_code(self, address: str) -> str:
        return str(self.tester.get_code(address))

    def nonce(self, address: str) -> int:
        return int(self.tester.get_nonce(address))

    def balance(self, address: str) -> int:
        return int(self.tester.get_balance(address))

    def base_fee(self) -> int:
        return int(self.tester.get_block_by_number("latest")["base_fee_per_gas"])

    def block_number(self) -> int:
        return int(self.tester.get_block_by_number("latest")["number"])

    def estimate_gas(self, tx: dict[str, Any]) -> int:
        return int(_reverting(self.tester.estimate_gas, tx))

    def call(self, tx: dict[str, Any]) -> str:
        return str(_reverting(self.tester.call, tx))

    def send_raw(self, raw_hex: str) -> str:
        from eth_account import Account

        raw = bytes.fromhex(raw_hex)
        tx_hash = "0x" + bytes(keccak(raw)).hex()
        try:
            sender = Account.recover_transaction(raw)
        except Exception:
            raise TxRejected("invalid_signature", "invalid signature or encoding") from None
        if self._locate(tx_hash) is not None:
            raise TxRejected("already_known", f"already known: {tx_hash}")
        try:
            result = self.tester.send_raw_transaction("0x" + raw_hex)
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
        try:
            self._log.append(raw)
        except BaseException:
            self._diverged = True  # executed but not logged: no snapshot of this state
            raise
        self._records += 1
        self._snapshot_if_due()
        return str(result).lower()

    def _locate(self, tx_hash: str) -> tuple[Any, Any, Any] | None:
        """(block, transaction, receipt) of a mined transaction, through py-evm's hash
        index. eth-tester's own lookup walks every block back from the head: 170 ms for
        an unknown hash on a 363-block chain (every broadcast asks), growing with it."""
        from eth.exceptions import TransactionNotFound as NotIndexed

        chain = self.tester.backend.chain
        try:
            number, index = chain.chaindb.get_transaction_index(bytes.fromhex(tx_hash[2:]))
        except (NotIndexed, ValueError):
            return None
        block = chain.get_canonical_block_by_number(number)
        return block, block.transactions[index], block.get_receipts(chain.chaindb)[index]

    def receipt(self, tx_hash: str) -> dict[str, Any] | None:
        found = self._locate(tx_hash)
        if found is None:
            return None  # unknown, or not mined (the devnet mines each one at once)
        block, _tx, receipt = found
        return {
            "status": int.from_bytes(receipt.state_root, "big"),  # EIP-658: 1 or 0
            "blockNumber": int(block.number),
            "transactionHash": tx_hash.lower(),
        }

    def transaction(self, tx_hash: str) -> dict[str, Any] | None:
        found = self._locate(tx_hash)
        if found is None:
            return None
        block, tx, _receipt = found
        return {
            "from": to_checksum_address(tx.sender),
            "to": to_checksum_address(tx.to) if tx.to else None,
            "data": "0x" + bytes(tx.data).hex(),
            "blockNumber": int(block.number),
        }

    def block(self, number: int | None) -> dict[str, Any] | None:
        """Number, hash and timestamp of a block (None: the latest); None if not mined."""
        try:
            found = self.tester.get_block_by_number("latest" if number is None else number)
        except BlockNotFound:
            return None
        return {
            "number": int(found["number"]),
            "hash": _hex(found["hash"]),
            "timestamp": int(found["timestamp"]),
        }

    def close(self) -> None:
        """Snapshot what the log gained since the last one (the next start restores it),
        then close the log."""
        try:
            self.snapshot()
        except OSError as exc:
            log.warning("devnet snapshot not written at close: %s", exc)
        finally:
            self._log.close()
