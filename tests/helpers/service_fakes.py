"""Shared pieces for the services tests: callers, a tiny devnet, and loopback fake servers.

The fake servers are real aiohttp servers on 127.0.0.1 with scripted answers: they stand in
for a hostile or broken chain node / IPFS daemon, which the real peers cannot be made to be.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
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
