"""`DevnetEvm`: the devnet's chain behind the same transport as a real node.

The EVM itself (`evm_core`, eth-tester over pure-Python py-evm) runs in a child process
(`evm_process`) this object owns: run in executor threads of the app's process it held the
GIL for tens of milliseconds per call and the window stalled (bench.gui measured p99 loop
lateness 26-69 ms, max 512 ms). Calls go one at a time over a pipe as JSON frames, sent and
awaited on one dedicated thread that sleeps in the pipe read without the GIL, so the event
loop never blocks. If the process dies, the call in flight fails as a retryable
NetworkError and the next call starts a fresh process, which restores the latest snapshot
and replays the rest of the fsynced log (`snapshot`): the chain comes back with the same
state, like a restarted node.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import multiprocessing as mp
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from r3mes_desktop.core import errors

DESCRIPTION = "embedded devnet"
CALL_SENDER = "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf"  # genesis account of test key 0x…01
OPEN_TIMEOUT_S = 600.0  # replaying a long log executes every transaction again
CALL_TIMEOUT_S = 120.0  # far above any single call; a hung process is killed and replaced
_ERROR_CLASSES: dict[str, type[errors.R3mesError]] = {
    cls.__name__: cls
    for cls in (
        errors.NetworkError,
        errors.TimeoutNetworkError,
        errors.ResourceError,
        errors.AuthenticationError,
        errors.ValidationError,
        errors.IntegrityError,
        errors.PermanentError,
    )
}


def _error(payload: dict[str, Any]) -> errors.R3mesError:
    """Rebuild the classified error the EVM process reported."""
    from r3mes_desktop.adapters.chain.transport import CallReverted, TxRejected

    name, message = str(payload.get("class")), str(payload.get("message"))
    if name == "TxRejected":
        return TxRejected(str(payload.get("kind", "other")), message)
    if name == "CallReverted":
        reason = payload.get("reason")
        return CallReverted(None if reason is None else str(reason), message)
    return _ERROR_CLASSES.get(name, errors.PermanentError)(message, service="chain")


class DevnetEvm:
    """A `ChainTransport` over the devnet's EVM process, whose state is rebuilt from a log."""

    def __init__(self, log_path: Path, *, snapshots: bool = True) -> None:
        self._log_path = Path(log_path)
        self._snapshots = snapshots
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="devnet-evm")
        self._process: BaseProcess | None = None
        self._conn: Connection | None = None
        self._lifeline: Connection | None = None  # its closing ends the process at once
        self._funded_keys: list[bytes] = []
        self.replayed = 0  # log records executed again at the last start
        self.restored = 0  # log records whose state came from a snapshot at the last start
        self.starts = 0  # processes started: 1 unless one died and was replaced
        self._closed = False

    @classmethod
    async def open(cls, log_path: Path, *, snapshots: bool = True) -> DevnetEvm:
        """`snapshots=False`: rebuild the state from the whole log and write no snapshot
        (an audit that must not trust a cached state)."""
        evm = cls(log_path, snapshots=snapshots)
        try:
            await evm._in_thread(evm._start)
        except BaseException:
            await evm.close()
            raise
        return evm

    # -- the process ------------------------------------------------------------------------
    def _start(self) -> None:
        from r3mes_desktop.adapters.devnet.evm_process import serve

        ctx = mp.get_context("spawn")
        parent_conn, child_conn = ctx.Pipe(duplex=True)
        lifeline_read, lifeline_write = ctx.Pipe(duplex=False)  # never written: EOF = we died
        process = ctx.Process(
            target=serve,
            args=(child_conn, str(self._log_path), lifeline_read, self._snapshots),
            name="r3mes-devnet-evm",
            daemon=True,
        )
        process.start()
        child_conn.close()  # only the child holds these now: its EOF is ours, and vice versa
        lifeline_read.close()
        self._process, self._conn, self._lifeline = process, parent_conn, lifeline_write
        self.starts += 1
        try:
            ready = self._reply(OPEN_TIMEOUT_S, "open")
        except BaseException:
            self._stop_process(grace_s=5)
            raise
        self._funded_keys = [bytes.fromhex(k) for k in ready["funded_keys"]]
        self.replayed = int(ready["replayed"])
        self.restored = int(ready.get("restored", 0))

    def _reply(self, timeout_s: float, method: str) -> Any:
        assert self._conn is not None
        try:
            if not self._conn.poll(timeout_s):
                self._stop_process()
                raise errors.TimeoutNetworkError(
                    f"the {DESCRIPTION}'s EVM gave no answer to {method} in {timeout_s:.0f} s; "
                    "it was restarted",
                    service="chain",
                )
            reply = json.loads(self._conn.recv_bytes())
        except (EOFError, OSError, ValueError) as exc:
            code = self._stop_process()
            raise errors.NetworkError(
                f"the {DESCRIPTION}'s EVM process exited during {method} (exit code {code}, "
                f"{type(exc).__name__}); the next call restarts it from its log",
                service="chain",
            ) from None
        if "error" in reply:
            raise _error(reply["error"])
        return reply["result"]

    def _stop_process(self, grace_s: float = 0.0) -> int | None:
        """Reap (or kill) the process and drop the pipe; returns its exit code."""
        process, conn, lifeline = self._process, self._conn, self._lifeline
        self._process = self._conn = self._lifeline = None
        if conn is not None:
            conn.close()  # EOF for the child if it is still reading
        if process is None:
            return None
        process.join(grace_s)
        if lifeline is not None:
            lifeline.close()  # a process still busy after the grace exits now
        if process.is_alive():
            process.kill()
            process.join(10)
        return process.exitcode

    def _roundtrip(self, method: str, params: list[Any]) -> Any:
        if self._conn is None:
            self._start()
        assert self._conn is not None
        with contextlib.suppress(OSError):  # a dead process: the read below reports it
            self._conn.send_bytes(json.dumps({"method": method, "params": params}).encode())
        return self._reply(CALL_TIMEOUT_S, method)

    async def _in_thread(self, fn: Any, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args))

    async def _call(self, method: str, *params: Any) -> Any:
        return await self._in_thread(self._roundtrip, method, list(params))

    # -- ChainTransport ---------------------------------------------------------------------
    @property
    def funded_keys(self) -> list[bytes]:
        """Private keys of eth-tester's pre-funded genesis accounts (public test keys)."""
        return list(self._funded_keys)

    @property
    def description(self) -> str:
        return DESCRIPTION

    async def chain_id(self) -> int:
        return int(await self._call("chain_id"))

    async def get_code(self, address: str) -> bytes:
        code = await self._call("get_code", to_checksum_address(address))
        return bytes.fromhex(str(code)[2:])

    async def nonce(self, address: str) -> int:
        return int(await self._call("nonce", to_checksum_address(address)))

    async def confirmed_nonce(self, address: str) -> int:
        """The devnet mines each accepted transaction at once and keeps no queue, so its
        pending count is its confirmed one."""
        return await self.nonce(address)

    async def balance(self, address: str) -> int:
        return int(await self._call("balance", to_checksum_address(address)))

    async def block_number(self) -> int:
        return int(await self._call("block_number"))

    async def fee_params(self) -> tuple[int, int]:
        base_fee = int(await self._call("base_fee"))
        tip = 10**9
        return 2 * base_fee + tip, tip

    async def estimate_gas(self, tx: dict[str, Any]) -> int:
        return int(await self._call("estimate_gas", _tester_tx(tx)))

    async def call(self, tx: dict[str, Any]) -> bytes:
        result = await self._call("call", _tester_tx(tx))
        return bytes.fromhex(str(result)[2:])

    async def send_raw(self, raw: bytes) -> str:
        return str(await self._call("send_raw", raw.hex()))

    async def receipt(self, tx_hash: str) -> dict[str, Any] | None:
        result: dict[str, Any] | None = await self._call("receipt", tx_hash)
        return result

    async def transaction(self, tx_hash: str) -> dict[str, Any] | None:
        t = await self._call("transaction", tx_hash)
        if t is None:
            return None
        return {**t, "data": bytes.fromhex(str(t["data"])[2:])}

    async def block(self, number: int | None = None) -> dict[str, Any] | None:
        found: dict[str, Any] | None = await self._call("block", number)
        return found

    async def close(self) -> None:
        """Ask the process to close its log and exit; reaped on the EVM thread, off the loop."""
        if self._closed:
            return
        self._closed = True

        def stop() -> None:
            if self._conn is not None:
                with contextlib.suppress(OSError):
                    self._conn.send_bytes(json.dumps({"method": "close"}).encode())
                    self._conn.poll(10)
            self._stop_process(grace_s=10)

        await self._in_thread(stop)
        self._executor.shutdown(wait=False)


def evm_log(data_dir: Path) -> Path:
    """The devnet chain's transaction log (its durable state) under a data dir."""
    return Path(data_dir) / "devnet" / "chain.log"


def to_checksum_address(address: str) -> str:
    """eth_utils' (web3's stack is imported after the EVM process starts, not before)."""
    from eth_utils.address import to_checksum_address as checksum

    return str(checksum(address))


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
