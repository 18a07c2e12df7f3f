"""Shared pieces for the services tests: callers, a tiny devnet, and loopback fake servers.

The fake servers are real aiohttp servers on 127.0.0.1 with scripted answers: they stand in
for a hostile or broken chain node / IPFS daemon, which the real peers cannot be made to be.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from aiohttp import web

from r3mes_desktop.adapters.devnet import Devnet
from r3mes_desktop.adapters.devnet.operator import RoundTemplate
from r3mes_desktop.core.clock import ManualClock
from r3mes_desktop.core.pow import is_valid_pow
from r3mes_desktop.core.resilience import ServiceCaller
from r3mes_desktop.core.resilience.retry import RetryPolicy

TINY_ROUNDS = RoundTemplate(difficulty=16, steps=2, hyperparams={"preset": "tiny"})


def make_caller(
    service: str, *, clock: ManualClock | None = None, retries: int = 0
) -> ServiceCaller:
    """A real ServiceCaller; retries wait on a ManualClock (no real sleeping)."""
    return ServiceCaller(
        service=service,
        policy=RetryPolicy(max_retries=retries, initial_delay=0.5),
        clock=clock or ManualClock(),
        timeout_s=30.0,
    )


async def open_devnet(
    data_dir: Path,
    *,
    clock: ManualClock | None = None,
    caller: ServiceCaller | None = None,
    **kw: Any,
) -> Devnet:
    """A devnet with the operator loop off; `caller` runs its connect step."""
    clock = clock or ManualClock()
    return await Devnet.open(
        data_dir,
        caller=caller or make_caller("chain", clock=clock),
        clock=clock,
        template=TINY_ROUNDS,
        operator_interval_s=None,
        **kw,
    )


def solve_pow(gradient_hash: bytes, miner: str, round_id: int, difficulty: int) -> int:
    nonce = 0
    while not is_valid_pow(gradient_hash, miner, round_id, nonce, difficulty):
        nonce += 1
    return nonce


def bad_pow(gradient_hash: bytes, miner: str, round_id: int, difficulty: int) -> int:
    nonce = 0
    while is_valid_pow(gradient_hash, miner, round_id, nonce, difficulty):
        nonce += 1
    return nonce


def gradient(tag: str) -> tuple[bytes, bytes]:
    data = f"gradient-{tag}".encode() * 50
    return data, hashlib.sha256(data).digest()


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class FakeServer:
    """An aiohttp app on 127.0.0.1:<free port>; records the requests it saw."""

    def __init__(self, handler: Handler) -> None:
        self.requests: list[tuple[str, str]] = []
        self._handler = handler
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def _record(self, request: web.Request) -> web.StreamResponse:
        body = await request.text() if request.can_read_body else ""
        self.requests.append((request.path, body))
        return await self._handler(request)

    async def __aenter__(self) -> FakeServer:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._record)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def rpc_server(answers: dict[str, Any]) -> FakeServer:
    """A JSON-RPC node answering each method from `answers`: a JSON-able `result`, a
    zero-argument callable returning a web.Response (sent as is), or a dict with "error"."""

    async def handle(request: web.Request) -> web.StreamResponse:
        payload = json.loads(await request.text())
        answer = answers.get(payload["method"], {"error": {"code": -32601, "message": "nope"}})
        if callable(answer):
            return answer()
        if isinstance(answer, dict) and "error" in answer:
            return web.json_response({"jsonrpc": "2.0", "id": payload["id"], **answer})
        return web.json_response({"jsonrpc": "2.0", "id": payload["id"], "result": answer})

    return FakeServer(handle)


def preflight_node(
    *,
    chain_id: int = 1337,
    code: str = "0x6000",
    version: str = "r3mes-rounds/2",
    balance_wei: int = 10**19,
    block_time: float = 1_700_000_000.0,
    base_fee_wei: int = 10**9,
) -> FakeServer:
    """A chain node answering what the pre-flight reads: chain id, contract code, the
    contract's VERSION() (any eth_call), balances, the latest block and the priority fee."""
    from eth_abi.abi import encode

    block = {
        "number": "0x10",
        "hash": "0x" + "11" * 32,
        "timestamp": hex(int(block_time)),
        "baseFeePerGas": hex(base_fee_wei),
    }
    return rpc_server(
        {
            "eth_chainId": hex(chain_id),
            "eth_getCode": code,
            "eth_call": "0x" + encode(["string"], [version]).hex(),
            "eth_getBalance": hex(balance_wei),
            "eth_getBlockByNumber": block,
            "eth_maxPriorityFeePerGas": hex(10**9),
        }
    )


def ipfs_daemon(version: str = "0.66.1") -> FakeServer:
    """An IPFS RPC API that answers /api/v0/version (and nothing else)."""

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.path == "/api/v0/version":
            return web.json_response({"Version": version, "Commit": "", "Repo": "12"})
        return web.Response(status=404, text="404 page not found")

    return FakeServer(handle)


def hanging_server(release: Any) -> FakeServer:
    """Accepts every request and answers only once `release` is set (an asyncio.Event, or
    a threading.Event when the server runs on another thread's loop): a hung node. Set it
    before leaving the server, so its shutdown does not wait."""
    import asyncio

    async def handle(request: web.Request) -> web.StreamResponse:
        # Polled, not awaited: a threading.Event cannot be awaited, and an asyncio.Event set
        # from another thread would not wake this loop.
        while not release.is_set():  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        return web.Response(status=503)

    return FakeServer(handle)


@contextlib.contextmanager
def served_in_thread(*servers: FakeServer) -> Iterator[tuple[FakeServer, ...]]:
    """Run fake servers on an event loop of their own thread, for code that runs its own
    loop (`r3mes-miner` commands call asyncio.run) in the test's thread."""
    import asyncio
    import threading

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fake-servers", daemon=True)
    thread.start()
    entered: list[FakeServer] = []
    try:
        for server in servers:
            asyncio.run_coroutine_threadsafe(server.__aenter__(), loop).result(10)
            entered.append(server)
        yield servers
    finally:
        for server in reversed(entered):
            asyncio.run_coroutine_threadsafe(server.__aexit__(None, None, None), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
