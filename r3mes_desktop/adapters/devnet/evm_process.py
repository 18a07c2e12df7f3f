"""The devnet's EVM process: serves `EvmCore` over a pipe, one JSON request at a time.

Why a process: py-evm is pure Python, and in the app's process each transaction, call or
gas estimate held the GIL for tens of milliseconds, which the window felt as stalls. The
wire format is JSON frames over a multiprocessing `Connection` (`send_bytes`/`recv_bytes`,
never pickled objects): request `{"method": ..., "params": [...]}`, reply
`{"result": ...}` or `{"error": {"class": ..., "message": ..., "kind"/"reason": ...}}`.

The process dies with its owner: the owner holds the only write end of a second pipe, the
lifeline, so when the owner exits in any way (even SIGKILL) a thread here reads EOF on it
and ends the process at once, even in the middle of a long replay or call (the request
pipe's EOF alone was only seen between requests: a miner killed while starting left this
process replaying for seconds). Nothing is lost by exiting there: every accepted
transaction was fsynced before its answer, and a torn last record is dropped at the next
open. SIGINT is ignored: a Ctrl+C in a terminal reaches the whole process group, and the
owner closes the devnet itself, in order.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from r3mes_desktop.core.errors import R3mesError, to_r3mes_error

METHODS = frozenset(
    {
        "chain_id",
        "get_code",
        "nonce",
        "balance",
        "base_fee",
        "block_number",
        "block",
        "estimate_gas",
        "call",
        "send_raw",
        "receipt",
        "transaction",
    }
)


def encode_error(exc: BaseException) -> dict[str, Any]:
    """A classified error as JSON: its class name, message and the fields callers read."""
    error: R3mesError = to_r3mes_error(exc, service="chain")
    out: dict[str, Any] = {"class": type(error).__name__, "message": str(error)}
    for name in ("kind", "reason"):
        if hasattr(error, name):
            out[name] = getattr(error, name)
    return out


def _exit_with_owner(lifeline: Connection) -> None:
    """Block on the lifeline; its EOF (or anything else) means the owner is gone."""
    with contextlib.suppress(EOFError, OSError):
        lifeline.recv_bytes()
    os._exit(0)


def serve(conn: Connection, log_path: str, lifeline: Connection, snapshots: bool = True) -> None:
    """Spawn target: open the chain (its snapshot and the log's tail, or with `snapshots`
    off the whole log, writing none), say ready, answer until EOF."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(
        target=_exit_with_owner, args=(lifeline,), name="owner-lifeline", daemon=True
    ).start()
    from r3mes_desktop.adapters.devnet.evm_core import SNAPSHOT_EVERY, EvmCore

    try:
        core = EvmCore(Path(log_path), snapshot_every=SNAPSHOT_EVERY if snapshots else None)
    except Exception as exc:
        _send(conn, {"error": encode_error(exc)})
        return
    ready = {
        "funded_keys": core.funded_keys(),
        "replayed": core.replayed,
        "restored": core.restored,
    }
    _send(conn, {"result": ready})
    try:
        while True:
            try:
                request = json.loads(conn.recv_bytes())
            except (EOFError, OSError):
                return  # the owner went away: nothing else may use this chain
            method = request.get("method")
            if method == "close":
                _send(conn, {"result": None})
                return
            try:
                if method not in METHODS:
                    raise ValueError(f"unknown devnet EVM method {method!r}")
                result = getattr(core, method)(*request.get("params", []))
            except Exception as exc:
                _send(conn, {"error": encode_error(exc)})
            else:
                _send(conn, {"result": result})
    finally:
        core.close()


def _send(conn: Connection, message: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):  # the owner went away; the next read ends the loop
        conn.send_bytes(json.dumps(message).encode())
