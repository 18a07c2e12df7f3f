"""Bad-input run: a table of hostile or broken inputs against the real code paths.

Each case must end in a clear error (its message names the field or the thing that is wrong)
or a documented safe fallback, must not crash the app (no unexpected exception type, no
traceback in an API answer), and must lose nothing (settings, keystore, journal rows and
checkpoints that were there before are still there after).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import ClientSession, web

from r3mes_desktop.core.errors import R3mesError


@dataclass
class Case:
    area: str
    name: str
    run: Callable[[Path], Awaitable[str]]  # returns the error text it saw; raises on failure


class Bad(AssertionError):
    """The case was not handled as promised."""


async def expect(
    fn: Callable[[], Any], kinds: tuple[type[BaseException], ...], *needles: str
) -> str:
    try:
        result = fn()
        if asyncio.iscoroutine(result):
            await result
    except kinds as exc:
        text = exc.message if isinstance(exc, R3mesError) else str(exc)
        missing = [n for n in needles if n.lower() not in text.lower()]
        if missing:
            raise Bad(f"error does not name {missing}: {text[:200]}") from None
        return text[:160]
    except Exception as exc:
        raise Bad(f"unexpected {type(exc).__name__}: {str(exc)[:200]}") from None
    raise Bad("no error")


# -- settings ---------------------------------------------------------------------------------
SETTINGS_CASES: list[tuple[dict[str, Any], str, str]] = [
    ({"transaction_timeout": 5}, "transaction_timeout", "10–86400"),
    ({"max_retries": -1}, "max_retries", "0–20"),
    ({"max_retries": 21}, "max_retries", "0–20"),
    ({"retry_wait": "sometimes"}, "retry_wait", "exponential"),
    ({"retry_initial_delay": "soon"}, "retry_initial_delay", "seconds"),
    ({"pow_difficulty": 12}, "pow_difficulty", "16–32"),
    ({"pow_difficulty": 40}, "pow_difficulty", "16–32"),
    ({"chain_rpc_urls": ["ftp://node.example"]}, "chain_rpc_urls", "url"),
    ({"contract_address": "0x1234"}, "contract_address", "0x"),
    ({"mining_devices": ["tpu"]}, "mining_devices", "cuda:n"),
    ({"api_host": "example.com"}, "api_host", "ip"),
    ({"api_port": 80}, "api_port", "1024–65535"),
    ({"email_enabled": True}, "smtp_host", "required"),
    ({"fault_plan": "/nonexistent/plan.toml"}, "fault_plan", "no such file"),
    ({"retry_initial_delay": 5, "retry_max_delay": 1}, "retry_max_delay", "retry_initial_delay"),
    ({"breaker_failure_threshold": 50}, "breaker_failure_threshold", "breaker_window_size"),
    ({"max_retires": 3}, "max_retires", ""),
    ({"call_timeout": 0}, "call_timeout", "1–3600"),
    ({"model_preset": "huge"}, "model_preset", "tiny"),
    ({"stale_threshold": 1}, "stale_threshold", "60–604800"),
]


def _settings_case(values: dict[str, Any], field: str, needle: str) -> Callable[[Path], Any]:
    async def run(root: Path) -> str:
        from r3mes_desktop.support.config import validate_candidate

        errors = validate_candidate(values)
        if field not in errors or needle.lower() not in errors[field].lower():
            raise Bad(f"expected an error on {field} naming {needle!r}, got {errors}")
        return f"{field}: {errors[field][:120]}"

    return run


async def settings_file_bad_value(root: Path) -> str:
    from r3mes_desktop.support.config import load_settings
    from r3mes_desktop.support.config.store import SettingsError

    path = root / "config" / "settings.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "max_retries = 3\npow_difficulty = 99\n"
    path.write_text(text)
    try:
        msg = await expect(lambda: load_settings(path), (SettingsError,), "pow_difficulty")
        if path.read_text() != text:
            raise Bad("the settings file was changed")
        return msg
    finally:
        path.unlink()


async def settings_file_not_toml(root: Path) -> str:
    from r3mes_desktop.support.config import load_settings
    from r3mes_desktop.support.config.store import SettingsError

    path = root / "config" / "settings.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("max_retries = [unclosed\n")
    try:
        return await expect(lambda: load_settings(path), (SettingsError,), "settings.toml")
    finally:
        path.unlink()


# -- fault plans ------------------------------------------------------------------------------
def _plan_case(data: dict[str, Any], *needles: str) -> Callable[[Path], Any]:
    async def run(root: Path) -> str:
        from r3mes_desktop.adapters.faults import FaultPlan
        from r3mes_desktop.core.errors import ValidationError

        return await expect(lambda: FaultPlan.from_mapping(data), (ValidationError,), *needles)

    return run


# -- keystore ---------------------------------------------------------------------------------
PASSWORD = "correct horse battery staple 42"


def _keystore(root: Path) -> Any:
    from r3mes_desktop.adapters.chain.keystore import Keystore

    ks = Keystore(root / "keys", scrypt_n=2**10)
    if not ks.exists():
        ks.import_hex("0x" + "11" * 32, PASSWORD)
    return ks


async def keystore_wrong_password(root: Path) -> str:
    from r3mes_desktop.core.errors import AuthenticationError

    ks = _keystore(root)
    msg = await expect(lambda: ks.unlock("wrong password"), (AuthenticationError,), "password")
    if "wrong password" in msg or ks.unlock(PASSWORD).address != ks.address():
        raise Bad("password echoed, or the keystore changed")
    return msg


def _import_case(key: str, *needles: str) -> Callable[[Path], Any]:
    async def run(root: Path) -> str:
        from r3mes_desktop.adapters.chain.keystore import Keystore
        from r3mes_desktop.core.errors import ValidationError

        ks = Keystore(root / "keys-import", scrypt_n=2**10)
        msg = await expect(lambda: ks.import_hex(key, PASSWORD), (ValidationError,), *needles)
        if key.removeprefix("0x") and key.removeprefix("0x") in msg:
            raise Bad("the key was echoed in the error")
        if ks.exists():
            raise Bad("a keystore was written for a bad key")
        return msg

    return run


async def keystore_overwrite_refused(root: Path) -> str:
    from r3mes_desktop.core.errors import ValidationError

    ks = _keystore(root)
    before = ks.path.read_bytes()
    msg = await expect(
        lambda: ks.import_hex("0x" + "22" * 32, PASSWORD), (ValidationError,), "already exists"
    )
    if ks.path.read_bytes() != before:
        raise Bad("the existing keystore was overwritten")
    return msg


async def keystore_corrupt_file(root: Path) -> str:
    from r3mes_desktop.adapters.chain.keystore import Keystore
    from r3mes_desktop.core.errors import ValidationError

    ks = Keystore(root / "keys-corrupt", scrypt_n=2**10)
    ks.path.parent.mkdir(parents=True, exist_ok=True)
    ks.path.write_text("{not json")
    return await expect(lambda: ks.unlock(PASSWORD), (ValidationError,), "keystore")


# -- hostile chain RPC -------------------------------------------------------------------------
class HostileServer:
    """A JSON-RPC / HTTP endpoint on 127.0.0.1 that answers whatever `mode` says."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        mode = self.mode
        if mode == "garbage":
            return web.Response(text="<html>502 bad gateway</html>", content_type="text/html")
        if mode.startswith("http"):
            return web.Response(status=int(mode[4:]), text="nope")
        if mode == "slow":
            await asyncio.sleep(5)
        if mode == "ipfs_wrong_cid":
            cid = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
            return web.Response(text=json.dumps({"Name": "blob", "Hash": cid, "Size": "3"}))
        try:
            req = json.loads(body or b"{}")
        except ValueError:
            req = {}
        rid = req.get("id", 1) if isinstance(req, dict) else 1
        answers = {
            "no_result": {"jsonrpc": "2.0", "id": rid},
            "bad_hex": {"jsonrpc": "2.0", "id": rid, "result": "0xZZ"},
            "list": [1, 2, 3],
            "error_obj": {"jsonrpc": "2.0", "id": rid, "error": {"code": -32000, "message": "x"}},
            "chain_1": {"jsonrpc": "2.0", "id": rid, "result": "0x1"},
            "empty_code": {"jsonrpc": "2.0", "id": rid, "result": "0x539"},
            "huge": {"jsonrpc": "2.0", "id": rid, "result": "0x" + "f" * 200},
        }
        if mode == "empty_code" and isinstance(req, dict) and req.get("method") == "eth_getCode":
            return web.json_response({"jsonrpc": "2.0", "id": rid, "result": "0x"})
        return web.json_response(answers.get(mode, answers["no_result"]))

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


SERVER = HostileServer()


def _rpc_case(mode: str, method: str, kinds: tuple[str, ...], *needles: str) -> Callable[..., Any]:
    async def run(root: Path) -> str:
        from r3mes_desktop.adapters.chain.transport import RpcTransport
        from r3mes_desktop.core import errors

        SERVER.mode = mode
        transport = RpcTransport(SERVER.url, timeout_s=1)
        classes = tuple(getattr(errors, k) for k in kinds)
        try:
            fn = getattr(transport, method)
            args = ("0x" + "00" * 20,) if method in ("nonce", "get_code", "balance") else ()
            return await expect(lambda: fn(*args), classes, "127.0.0.1", *needles)
        finally:
            await transport.close()

    return run


def _connect_case(mode: str, *needles: str) -> Callable[..., Any]:
    async def run(root: Path) -> str:
        from eth_account import Account

        from r3mes_desktop.adapters.chain.client import ChainClient
        from r3mes_desktop.adapters.chain.nonces import NonceStore
        from r3mes_desktop.adapters.chain.transport import RpcTransport
        from r3mes_desktop.core.errors import ValidationError

        SERVER.mode = mode
        transport = RpcTransport(SERVER.url, timeout_s=1)
        nonces = NonceStore(root / f"nonces-{mode}.sqlite")
        try:
            return await expect(
                lambda: ChainClient.connect(
                    transport=transport,
                    account=Account.create(),
                    contract_address="0x" + "ab" * 20,
                    nonces=nonces,
                    expected_chain_id=1337,
                ),
                (ValidationError,),
                *needles,
            )
        finally:
            nonces.close()
            await transport.close()

    return run


# -- IPFS -------------------------------------------------------------------------------------
async def ipfs_wrong_cid(root: Path) -> str:
    from r3mes_desktop.adapters.ipfs.client import IpfsClient
    from r3mes_desktop.core.errors import IntegrityError, NetworkError

    SERVER.mode = "ipfs_wrong_cid"
    client = IpfsClient(SERVER.url)
    try:
        return await expect(
            lambda: client.add_and_pin(b"abc"), (IntegrityError, NetworkError), "cid"
        )
    finally:
        await client.close()


async def ipfs_unreachable(root: Path) -> str:
    from r3mes_desktop.adapters.ipfs.client import IpfsClient
    from r3mes_desktop.core.errors import NetworkError

    client = IpfsClient("http://127.0.0.1:9")
    try:
        return await expect(lambda: client.add_and_pin(b"abc"), (NetworkError,), "127.0.0.1")
    finally:
        await client.close()


def _store(root: Path) -> Any:
    from r3mes_desktop.adapters.ipfs.local_store import LocalContentStore

    return LocalContentStore(root / "store", max_gradient_size_mb=1)


async def store_oversized(root: Path) -> str:
    from r3mes_desktop.core.errors import ValidationError

    store = _store(root)
    return await expect(
        lambda: store.add_and_pin(b"x" * (2 * 1024 * 1024)), (ValidationError,), "max_gradient"
    )


async def store_empty(root: Path) -> str:
    from r3mes_desktop.core.errors import ValidationError

    return await expect(lambda: _store(root).add_and_pin(b""), (ValidationError,), "empty")


async def store_corrupt_blob(root: Path) -> str:
    from r3mes_desktop.core.errors import IntegrityError

    store = _store(root)
    cid = await store.add_and_pin(b"precious gradient")
    (store.blobs / cid).write_bytes(b"bit rot")
    msg = await expect(lambda: store.cat(cid), (IntegrityError,), cid[:12], "corrupt")
    if not await store.is_pinned(cid):
        raise Bad("the pin was lost")
    return msg


async def store_corrupt_pins(root: Path) -> str:
    from r3mes_desktop.core.errors import IntegrityError

    store = _store(root / "pins")
    await store.add_and_pin(b"one")
    cid = await store.add_and_pin(b"two")
    (store.root / "pins.json").write_text("{torn")
    return await expect(lambda: store.is_pinned(cid), (IntegrityError,), "pin list")


async def store_bad_cid(root: Path) -> str:
    from r3mes_desktop.core.errors import ValidationError

    return await expect(lambda: _store(root).cat("not-a-cid!"), (ValidationError,), "cid")


# -- checkpoints ------------------------------------------------------------------------------
def _checkpoints(root: Path) -> Any:
    from r3mes_desktop.adapters.mining.checkpoint import CheckpointStore

    store = CheckpointStore(root / "checkpoints")
    for step in (10, 20):
        store.save(
            "tx1",
            round_id=1,
            step=step,
            tensors={"w": np.full((4,), step, dtype=np.float32)},
            state={"step": step, "plan": "p"},
        )
    return store


def _checkpoint_case(
    corrupt: Callable[[Path], None], expect_step: int | None
) -> Callable[..., Any]:
    async def run(root: Path) -> str:
        work = root / f"ckpt-{expect_step}-{id(corrupt)}"
        store = _checkpoints(work)
        for path in sorted((work / "checkpoints").rglob("*")):
            if path.is_file():
                corrupt(path)
        loaded = store.load_latest("tx1", expect={"plan": "p"})
        got = None if loaded is None else loaded.state["step"]
        if got != expect_step:
            raise Bad(f"loaded step {got}, expected {expect_step}")
        return f"fell back to step {got}" if got else "no intact checkpoint: training restarts"

    return run


def _corrupt_latest_tensors(path: Path) -> None:
    if "20" in path.name and path.suffix == ".safetensors":
        path.write_bytes(b"\x00" * 16)


def _truncate_latest_json(path: Path) -> None:
    if "20" in path.name and path.suffix == ".json":
        path.write_bytes(path.read_bytes()[:7])


def _corrupt_all(path: Path) -> None:
    path.write_bytes(b"garbage")


# -- journal ----------------------------------------------------------------------------------
async def _journal_with_row(path: Path) -> Any:
    from r3mes_desktop.core.journal import Journal
    from r3mes_desktop.core.steps import RoundSpec
    from r3mes_desktop.core.txstate import TxState

    journal = Journal(path)
    await journal.open()
    spec = RoundSpec(round_id=1, seed=1, difficulty=16, base_model_id="m", steps=1)
    await journal.create(
        tx_id="tx-keep",
        spec=spec,
        miner="0x" + "11" * 20,
        now=1.0,
        deadline=100.0,
        start=TxState.TRAINING,
    )
    return journal


async def journal_not_a_database(root: Path) -> str:
    from r3mes_desktop.core.journal import Journal

    path = root / "journal-garbage.sqlite"
    path.write_bytes(b"this is not sqlite" * 100)
    journal = Journal(path)
    try:
        return await expect(journal.open, (R3mesError, sqlite3.DatabaseError), "journal")
    finally:
        await journal.close()


async def journal_locked(root: Path) -> str:
    path = root / "journal-locked.sqlite"
    journal = await _journal_with_row(path)
    await journal.close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    from r3mes_desktop.core.journal import Journal

    other = Journal(path)
    try:
        await other.open()  # WAL: readers are not blocked; the first write waits, then fails

        async def write() -> None:
            from r3mes_desktop.core.steps import RoundSpec
            from r3mes_desktop.core.txstate import TxState

            spec = RoundSpec(round_id=2, seed=2, difficulty=16, base_model_id="m", steps=1)
            await other.create(
                tx_id="tx-new",
                spec=spec,
                miner="0x" + "11" * 20,
                now=2.0,
                deadline=100.0,
                start=TxState.TRAINING,
            )

        msg = await expect(write, (R3mesError, sqlite3.OperationalError), "locked")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        await other.close()
    check = sqlite3.connect(path)
    try:
        if check.execute("SELECT COUNT(*) FROM transactions").fetchone()[0] != 1:
            raise Bad("a journal row was lost")
    finally:
        check.close()
    return msg


async def journal_broken_invariant(root: Path) -> str:
    path = root / "journal-invariant.sqlite"
    journal = await _journal_with_row(path)
    await journal.close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE transactions SET state = 'committed', cid = NULL WHERE id = 'tx-keep'")
    conn.commit()
    conn.close()
    from r3mes_desktop.core.journal import Journal

    journal = Journal(path)
    await journal.open()
    try:
        problems = await journal.integrity_check()
    finally:
        await journal.close()
    if not problems or "tx-keep" not in " ".join(problems):
        raise Bad(f"integrity check did not report the broken row: {problems}")
    return problems[0][:160]


async def journal_second_miner(root: Path) -> str:
    from r3mes_desktop.app.instance_lock import InstanceLock

    first = InstanceLock(root / "locked-data")
    first.acquire()
    try:
        second = InstanceLock(root / "locked-data")
        return await expect(second.acquire, (Exception,), "another r3mes miner", "stop it")
    finally:
        first.release()


# -- the local API ----------------------------------------------------------------------------
AUTH = {"auth": "1"}  # replaced by the server's bearer token
API_CASES: list[tuple[str, str, str, dict[str, str], bytes | None, tuple[int, ...]]] = [
    ("unknown transaction", "GET", "/transaction/mining_tx_nope", {}, None, (404,)),
    ("SQL in the id", "GET", "/transaction/x'%3B%20DROP%20TABLE%20x%3B--", {}, None, (400,)),
    ("path traversal", "GET", "/transaction/..%2F..%2Fetc%2Fpasswd", {}, None, (400, 404)),
    ("cleanup without token", "POST", "/cleanup-stale", {}, b"{}", (401,)),
    (
        "cleanup wrong token",
        "POST",
        "/cleanup-stale",
        {"Authorization": "Bearer nope"},
        b"{}",
        (401,),
    ),
    ("cleanup not JSON", "POST", "/cleanup-stale", AUTH, b"not json", (400,)),
    (
        "cleanup negative age",
        "POST",
        "/cleanup-stale",
        AUTH,
        b'{"older_than_s": -5}',
        (400,),
    ),
    (
        "cleanup text age",
        "POST",
        "/cleanup-stale",
        AUTH,
        b'{"older_than_s": "abc"}',
        (400,),
    ),
    (
        "cleanup unknown field",
        "POST",
        "/cleanup-stale",
        AUTH,
        b'{"everything": 1}',
        (400,),
    ),
    ("reset unknown breaker", "POST", "/circuit-breakers/nosuch/reset", AUTH, b"", (404,)),
    ("foreign Host header", "GET", "/stats", {"Host": "evil.example"}, None, (403, 421)),
    ("wrong method", "PUT", "/stats", {}, b"{}", (401, 405)),
    (
        "oversized body",
        "POST",
        "/cleanup-stale",
        AUTH,
        b"{" + b" " * 99_999 + b"}",
        (413,),
    ),
    ("unknown path", "GET", "/admin", {}, None, (404,)),
]


class _NoChain:
    miner_address = "0x" + "11" * 20


def _api_case(
    method: str, path: str, headers: dict[str, str], body: bytes | None, status: tuple[int, ...]
) -> Callable[..., Any]:
    async def run(root: Path) -> str:
        from r3mes_desktop.api import ApiConfig, ApiServer
        from r3mes_desktop.core.coordinator import Coordinator
        from r3mes_desktop.core.events import EventBus
        from r3mes_desktop.support.config import load_settings

        path_db = root / "api" / "journal.sqlite"
        journal = await _journal_with_row(path_db) if not path_db.exists() else None
        if journal is not None:
            await journal.close()
        from r3mes_desktop.core.journal import Journal

        bus = EventBus()
        coordinator = Coordinator(
            journal=Journal(path_db),
            trainer=None,  # type: ignore[arg-type]
            pow=None,  # type: ignore[arg-type]
            store=None,  # type: ignore[arg-type]
            chain=_NoChain(),  # type: ignore[arg-type]
            task_api=None,  # type: ignore[arg-type]
            settings=load_settings(use_env=False),
            bus=bus,
            artifacts_dir=root / "api" / "artifacts",
        )
        await coordinator.start(background=False, check_integrity=False)
        server = ApiServer(
            ApiConfig(enabled=True, port=0), coordinator=coordinator, bus=bus, token="t0k3n"
        )
        await server.start()
        try:
            sent = dict(headers)
            if sent.pop("auth", None):
                sent["Authorization"] = "Bearer t0k3n"
            async with (
                ClientSession() as session,
                session.request(method, server.url + path, headers=sent, data=body) as resp,
            ):
                text = await resp.text()
                got = resp.status
        finally:
            await server.stop()
            await coordinator.close()
        if got not in status:
            raise Bad(f"HTTP {got}, expected {status}: {text[:160]}")
        if "Traceback" in text or "t0k3n" in text:
            raise Bad(f"traceback or token in the answer: {text[:160]}")
        try:
            answer = json.loads(text)
        except ValueError:
            raise Bad(f"not a JSON error: {text[:120]}") from None
        conn = sqlite3.connect(path_db)
        try:
            if conn.execute("SELECT COUNT(*) FROM transactions").fetchone()[0] != 1:
                raise Bad("a journal row was lost")
        finally:
            conn.close()
        return f"HTTP {got}: {json.dumps(answer)[:120]}"

    return run


def cases() -> list[Case]:
    table: list[Case] = []
    for values, field, needle in SETTINGS_CASES:
        shown = ", ".join(f"{k}={v!r}" for k, v in values.items())
        table.append(Case("settings", shown, _settings_case(values, field, needle)))
    table += [
        Case("settings", "settings.toml with pow_difficulty = 99", settings_file_bad_value),
        Case("settings", "settings.toml that is not TOML", settings_file_not_toml),
        Case("fault plan", "unknown service", _plan_case({"disk": {"x": 0.1}}, "disk")),
        Case("fault plan", "rate 1.5", _plan_case({"chain": {"timeout": 1.5}}, "chain.timeout")),
        Case("fault plan", "unknown fault", _plan_case({"ipfs": {"meteor": 0.1}}, "ipfs.meteor")),
        Case(
            "fault plan",
            "rates over 1",
            _plan_case({"chain": {"timeout": 0.6, "slow": 0.6}}, "[chain]"),
        ),
        Case("keystore", "wrong password", keystore_wrong_password),
        Case("keystore", "key not hex", _import_case("0xzz" + "1" * 62, "private_key")),
        Case("keystore", "key too short", _import_case("0x1234", "private_key")),
        Case("keystore", "zero key", _import_case("0x" + "00" * 32, "private_key")),
        Case("keystore", "overwrite an existing keystore", keystore_overwrite_refused),
        Case("keystore", "keystore file not JSON", keystore_corrupt_file),
    ]
    rpc = [
        ("garbage", "chain_id", ("NetworkError",), "malformed"),
        ("no_result", "chain_id", ("NetworkError",), "no result"),
        ("bad_hex", "chain_id", ("NetworkError",), "chain id"),
        ("bad_hex", "nonce", ("NetworkError",), "nonce"),
        ("list", "fee_params", ("NetworkError",), "malformed"),
        ("huge", "chain_id", ("NetworkError",), "hex"),
        ("http500", "chain_id", ("NetworkError",), "HTTP 500"),
        ("http401", "chain_id", ("AuthenticationError",), "HTTP 401"),
        ("http404", "get_code", ("ValidationError", "PermanentError", "NetworkError"), "404"),
        ("error_obj", "balance", ("NetworkError",), "error"),
    ]
    for mode, method, kinds, needle in rpc:
        table.append(Case("chain RPC", f"{method}: {mode}", _rpc_case(mode, method, kinds, needle)))
    table += [
        Case("chain RPC", "connect: wrong chain id", _connect_case("chain_1", "chain_id")),
        Case("chain RPC", "connect: no contract code", _connect_case("empty_code", "contract")),
        Case("IPFS", "daemon returns another CID", ipfs_wrong_cid),
        Case("IPFS", "daemon unreachable", ipfs_unreachable),
        Case("IPFS", "gradient over max_gradient_size_mb", store_oversized),
        Case("IPFS", "empty gradient", store_empty),
        Case("IPFS", "stored blob corrupt", store_corrupt_blob),
        Case("IPFS", "pin list corrupt", store_corrupt_pins),
        Case("IPFS", "malformed CID", store_bad_cid),
        Case("checkpoint", "latest tensors corrupt", _checkpoint_case(_corrupt_latest_tensors, 10)),
        Case("checkpoint", "latest record truncated", _checkpoint_case(_truncate_latest_json, 10)),
        Case("checkpoint", "every file corrupt", _checkpoint_case(_corrupt_all, None)),
        Case("journal", "file is not a database", journal_not_a_database),
        Case("journal", "locked by another process", journal_locked),
        Case("journal", "row breaks an invariant", journal_broken_invariant),
        Case("journal", "second miner on the data dir", journal_second_miner),
    ]
    for name, method, path, headers, body, status in API_CASES:
        table.append(Case("API", name, _api_case(method, path, headers, body, status)))
    return table


async def run_bad_inputs(root: Path) -> dict[str, Any]:
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)  # noqa: ASYNC240 - once, before anything runs
    await SERVER.start()
    rows = []
    try:
        for case in cases():
            try:
                detail = await asyncio.wait_for(case.run(root), timeout=30)
                ok = True
            except Bad as exc:
                detail, ok = str(exc), False
            except Exception as exc:  # a crash of the code under test
                detail, ok = f"CRASH {type(exc).__name__}: {str(exc)[:200]}", False
            rows.append({"area": case.area, "input": case.name, "ok": ok, "detail": detail})
    finally:
        await SERVER.stop()
    return {
        "tried": len(rows),
        "handled": sum(r["ok"] for r in rows),
        "failed": [r for r in rows if not r["ok"]],
        "rows": rows,
    }
