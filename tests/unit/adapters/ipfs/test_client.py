"""The IPFS client against a scripted daemon: wrong CIDs, refusals, an unreachable daemon."""

from __future__ import annotations

import json

import pytest
from aiohttp import web

from r3mes_desktop.adapters.ipfs.client import IpfsClient
from r3mes_desktop.core.cid import compute_cid
from r3mes_desktop.core.errors import IntegrityError, NetworkError, ValidationError
from tests.helpers.service_fakes import FakeServer
from tests.integration.conftest import free_port


def _daemon(add_hash: str) -> FakeServer:
    async def handle(request: web.Request) -> web.StreamResponse:
        if request.path == "/api/v0/add":
            return web.json_response({"Name": "", "Hash": add_hash, "Size": "5"})
        if request.path == "/api/v0/pin/rm":
            return web.Response(
                status=500,
                text=json.dumps(
                    {"Message": "not pinned or pinned indirectly", "Code": 0, "Type": "error"}
                ),
                content_type="application/json",
            )
        if request.path == "/api/v0/version":
            return web.json_response({"Version": "0.66.1", "Commit": "", "Repo": "12"})
        return web.json_response({"Keys": {}})

    return FakeServer(handle)


async def test_daemon_returning_another_cid_is_an_integrity_error_and_unpinned() -> None:
    liar = compute_cid(b"somebody else's data")
    async with _daemon(liar) as server:
        client = IpfsClient(server.url)
        with pytest.raises(IntegrityError, match="upload was unpinned"):
            await client.add_and_pin(b"hello")
        paths = [path for path, _ in server.requests]
        assert paths == ["/api/v0/add", "/api/v0/pin/rm"]
        await client.close()


async def test_daemon_returning_a_garbage_cid_is_an_integrity_error() -> None:
    async with _daemon("not-a-cid") as server:
        client = IpfsClient(server.url)
        with pytest.raises(IntegrityError):
            await client.add_and_pin(b"hello")
        await client.close()


async def test_unpin_of_unpinned_content_succeeds() -> None:
    async with _daemon(compute_cid(b"hello")) as server:
        client = IpfsClient(server.url)
        assert await client.add_and_pin(b"hello") == compute_cid(b"hello")
        await client.unpin(compute_cid(b"hello"))
        assert not await client.is_pinned(compute_cid(b"hello"))
        await client.close()


async def test_oversized_gradient_is_refused_before_any_request() -> None:
    async with _daemon(compute_cid(b"x")) as server:
        client = IpfsClient(server.url, max_gradient_size_mb=1)
        with pytest.raises(ValidationError, match="max_gradient_size_mb=1"):
            await client.add_and_pin(b"x" * (2 * 1024 * 1024))
        assert server.requests == []
        await client.close()


async def test_unreachable_daemon_names_the_address() -> None:
    address = f"/ip4/127.0.0.1/tcp/{free_port()}"
    client = IpfsClient(address)
    with pytest.raises(NetworkError, match=f"IPFS daemon at {address} is unreachable"):
        await client.add_and_pin(b"hello")
    await client.close()


async def test_version_is_the_daemons_and_a_malformed_answer_is_a_network_error() -> None:
    async with _daemon(compute_cid(b"x")) as server:
        client = IpfsClient(server.url)
        assert await client.version() == "0.66.1"
        await client.close()

    async def handle(request: web.Request) -> web.StreamResponse:
        return web.json_response({"Keys": {}})

    async with FakeServer(handle) as server:
        client = IpfsClient(server.url)
        with pytest.raises(NetworkError, match="malformed version"):
            await client.version()
        await client.close()


async def test_version_of_an_unreachable_daemon_names_the_address() -> None:
    address = f"/ip4/127.0.0.1/tcp/{free_port()}"
    client = IpfsClient(address)
    with pytest.raises(NetworkError, match=f"IPFS daemon at {address} is unreachable"):
        await client.version()
    await client.close()


def test_bad_api_address_names_the_field() -> None:
    with pytest.raises(ValidationError, match="ipfs_api_address"):
        IpfsClient("ftp://nowhere")
