"""Joining: the network file from a path or a URL (https, or http from 127.0.0.1 only,
size-capped, no redirects), bad input naming the field, and settings written only when
the required checks passed (or forced), saying what was written."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from r3mes_desktop.app.joining import (
    MAX_NETWORK_FILE_BYTES,
    fetch_network_file,
    join,
    load_network,
)
from r3mes_desktop.app.preflight import FAILED
from r3mes_desktop.support.config import load_settings, paths
from r3mes_desktop.support.network_file import NetworkFile, NetworkFileError
from tests.helpers.service_fakes import FakeServer, ipfs_daemon, preflight_node
from tests.integration.conftest import free_port

pytestmark = pytest.mark.timeout(60)
CONTRACT = "0x" + "ab" * 20


def network_json(rpc: str, ipfs: str, **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "format": "r3mes-network/1",
        "name": "testnet",
        "chain_id": 1337,
        "rpc_urls": [rpc],
        "contract_address": CONTRACT,
        "contract_version": "r3mes-rounds/2",
        "ipfs_api": ipfs,
    }
    data.update(changes)
    return data


def write(path: Path, data: Any) -> str:
    path.write_text(json.dumps(data), encoding="utf-8")
    return str(path)


@pytest.fixture
def no_env_endpoints() -> Iterator[None]:
    names = ("R3MES_CHAIN_RPC_URLS", "R3MES_CHAIN_ID", "R3MES_CONTRACT_ADDRESS")
    saved = {n: os.environ.pop(n, None) for n in names}
    yield
    for name, value in saved.items():
        if value is not None:
            os.environ[name] = value


async def test_join_writes_the_networks_settings_once_the_checks_pass(
    tmp_path: Path, no_env_endpoints: None
) -> None:
    async with preflight_node() as node, ipfs_daemon() as ipfs:
        source = write(tmp_path / "network.json", network_json(node.url, ipfs.url))
        result = await join(source, settings=load_settings(), account=None)
    assert result.joined
    assert result.path == paths().settings_file
    assert result.written == {
        "chain_rpc_urls": [node.url],
        "chain_id": 1337,
        "contract_address": CONTRACT,
        "ipfs_api_address": ipfs.url,
        "network_name": "testnet",
    }
    assert result.overridden == {}
    settings = load_settings()
    assert settings.chain_rpc_urls == (node.url,)
    assert (settings.chain_id, settings.contract_address) == (1337, CONTRACT)
    assert (settings.ipfs_api_address, settings.network_name) == (ipfs.url, "testnet")


async def test_a_failed_required_check_writes_nothing_unless_forced(
    tmp_path: Path, no_env_endpoints: None
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    async with ipfs_daemon() as ipfs:
        source = write(tmp_path / "network.json", network_json(dead, ipfs.url))
        refused = await join(source, settings=load_settings(), account=None, timeout_s=1)
        assert not refused.joined
        assert refused.written == {}
        assert {c.name for c in refused.checks if c.status == FAILED} == {"rpc"}
        assert not paths().settings_file.exists()

        forced = await join(source, settings=load_settings(), account=None, force=True)
    assert forced.joined
    assert load_settings().chain_rpc_urls == (dead,)


async def test_an_environment_override_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with preflight_node() as node, ipfs_daemon() as ipfs:
        monkeypatch.setenv("R3MES_CHAIN_ID", "1337")
        source = write(tmp_path / "network.json", network_json(node.url, ipfs.url))
        result = await join(source, settings=load_settings(), account=None)
    assert result.overridden == {"chain_id": "R3MES_CHAIN_ID"}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"contract_address": "0x1234"}, "contract_address: expected 0x and 40 hex digits"),
        ({"chain_id": "five"}, "chain_id: expected a positive integer"),
        ({"rpc_urls": ["ftp://x"]}, "rpc_urls: expected one or more http(s)://"),
        ({"format": "r3mes-network/9"}, "format: expected 'r3mes-network/1'"),
    ],
)
async def test_bad_input_names_the_field(
    tmp_path: Path, changes: dict[str, Any], message: str
) -> None:
    source = write(tmp_path / "n.json", network_json("http://127.0.0.1:1", "", **changes))
    with pytest.raises(NetworkFileError, match=message.replace("(", r"\(").replace(")", r"\)")):
        await load_network(source)


async def test_a_missing_field_a_non_json_file_and_a_huge_file_are_refused(
    tmp_path: Path,
) -> None:
    data = network_json("http://127.0.0.1:1", "")
    del data["contract_address"]
    with pytest.raises(NetworkFileError, match=r"^contract_address: required$"):
        await load_network(write(tmp_path / "a.json", data))
    (tmp_path / "b.json").write_text("{ not json", encoding="utf-8")
    with pytest.raises(NetworkFileError, match="not JSON"):
        await load_network(str(tmp_path / "b.json"))
    (tmp_path / "c.json").write_bytes(b" " * (MAX_NETWORK_FILE_BYTES + 1))
    with pytest.raises(NetworkFileError, match="larger than 65536 bytes"):
        await load_network(str(tmp_path / "c.json"))
    with pytest.raises(NetworkFileError, match="cannot read"):
        await load_network(str(tmp_path / "missing.json"))


def _file_server(routes: dict[str, web.StreamResponse]) -> FakeServer:
    async def handle(request: web.Request) -> web.StreamResponse:
        return routes.get(request.path) or web.Response(status=404)

    return FakeServer(handle)


async def test_a_url_is_fetched_from_loopback_over_http_with_a_size_limit() -> None:
    good = network_json("https://rpc.example.org", "/ip4/127.0.0.1/tcp/5001")
    routes: dict[str, web.StreamResponse] = {
        "/network.json": web.json_response(good),
        "/huge.json": web.Response(body=b" " * (MAX_NETWORK_FILE_BYTES + 10)),
        "/moved": web.Response(status=302, headers={"Location": "/network.json"}),
    }
    async with _file_server(routes) as server:
        network = await fetch_network_file(f"{server.url}/network.json")
        assert network == NetworkFile.from_json(good)
        with pytest.raises(NetworkFileError, match="larger than 65536 bytes"):
            await fetch_network_file(f"{server.url}/huge.json")
        with pytest.raises(NetworkFileError, match="HTTP 302, expected 200"):
            await fetch_network_file(f"{server.url}/moved")  # redirects are not followed
        with pytest.raises(NetworkFileError, match="HTTP 404"):
            await fetch_network_file(f"{server.url}/missing.json")


@pytest.mark.parametrize(
    "url", ["http://example.org/network.json", "http://localhost:8000/n.json", "ftp://x/n"]
)
async def test_plain_http_is_refused_except_from_127_0_0_1(url: str) -> None:
    with pytest.raises(NetworkFileError, match=r"expected https:// \(http:// only for 127.0.0.1\)"):
        await load_network(url) if url.startswith("http") else await fetch_network_file(url)


async def test_an_unreachable_url_says_so() -> None:
    url = f"http://127.0.0.1:{free_port()}/network.json"
    with pytest.raises(NetworkFileError, match="cannot download"):
        await fetch_network_file(url)
