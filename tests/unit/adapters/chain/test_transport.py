"""Hostile and broken JSON-RPC nodes (a scripted aiohttp server on 127.0.0.1)."""

from __future__ import annotations

import pytest
from aiohttp import web
from eth_account import Account

from r3mes_desktop.adapters.chain.abi import ERROR_SELECTOR
from r3mes_desktop.adapters.chain.client import ChainClient
from r3mes_desktop.adapters.chain.nonces import NonceStore
from r3mes_desktop.adapters.chain.transport import CallReverted, FallbackTransport, RpcTransport
from r3mes_desktop.core.errors import (
    AuthenticationError,
    NetworkError,
    ValidationError,
)
from r3mes_desktop.core.steps import SignedSubmission
from tests.helpers.service_fakes import rpc_server
from tests.integration.conftest import free_port

CONTRACT = "0x" + "11" * 20


def _garbage() -> web.Response:
    return web.Response(text="<html>proxy error</html>", content_type="text/html")


@pytest.mark.parametrize(
    ("answer", "error", "text"),
    [
        (_garbage, NetworkError, "malformed response to eth_chainId"),
        (lambda: web.Response(status=502, text="bad gateway"), NetworkError, "HTTP 502"),
        (lambda: web.Response(status=401, text="no"), AuthenticationError, "HTTP 401"),
        ("not-hex", NetworkError, "malformed chain id"),
        (12, NetworkError, "malformed chain id"),
        (lambda: web.json_response({"jsonrpc": "2.0", "id": 1}), NetworkError, "no result"),
        (lambda: web.json_response([1, 2]), NetworkError, "not a JSON object"),
        ({"error": {"code": -32000, "message": "boom"}}, NetworkError, "answered eth_chainId"),
    ],
)
async def test_malformed_answers_are_network_errors_naming_the_url(answer, error, text) -> None:
    async with rpc_server({"eth_chainId": answer}) as server:
        transport = RpcTransport(server.url)
        with pytest.raises(error, match=text) as info:
            await transport.chain_id()
        assert f"127.0.0.1:{server.port}" in str(info.value)
        await transport.close()


async def test_unreachable_endpoint_says_which_url_and_what_happened() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    transport = RpcTransport(url)
    with pytest.raises(NetworkError, match=rf"chain RPC {url} is unreachable \(eth_chainId\)"):
        await transport.chain_id()
    await transport.close()


async def test_token_in_url_is_not_repeated_in_errors() -> None:
    token = "s3cr3tAPIkey0123456789abcdef"
    url = f"http://127.0.0.1:{free_port()}/v3/{token}"
    transport = RpcTransport(url)
    with pytest.raises(NetworkError) as info:
        await transport.chain_id()
    assert token not in str(info.value) and "/v3/***" in str(info.value)
    await transport.close()


async def test_ganache_style_revert_data_is_decoded() -> None:
    from eth_abi import encode

    data = "0x" + (ERROR_SELECTOR + encode(["string"], ["already submitted"])).hex()
    error = {"error": {"code": -32000, "message": "VM Exception", "data": {"result": data}}}
    async with rpc_server({"eth_estimateGas": error, "eth_call": error}) as server:
        transport = RpcTransport(server.url)
        with pytest.raises(CallReverted) as info:
            await transport.estimate_gas({"to": CONTRACT, "data": b"\x01"})
        assert info.value.reason == "already submitted"
        await transport.close()


async def _client(server_url: str, tmp_path, **answers) -> ChainClient:
    """A connected client; a refused connect closes the transport it was given (whoever
    makes a transport closes it, as the runtime does)."""
    transport = RpcTransport(server_url)
    try:
        return await ChainClient.connect(
            transport=transport,
            account=Account.create(),
            contract_address=CONTRACT,
            nonces=NonceStore(tmp_path / "n.sqlite"),
            **answers,
        )
    except BaseException:
        await transport.close()
        raise


async def test_connect_checks_chain_id_and_code(tmp_path) -> None:
    async with rpc_server({"eth_chainId": "0x5", "eth_getCode": "0x"}) as server:
        with pytest.raises(ValidationError, match=r"chain_id: .* chain 5, expected 1337"):
            await _client(server.url, tmp_path, expected_chain_id=1337)
        with pytest.raises(ValidationError, match="contract_address: no contract code"):
            await _client(server.url, tmp_path, expected_chain_id=5)
    with pytest.raises(ValidationError, match="contract_address: expected"):
        await ChainClient.connect(
            transport=RpcTransport("http://127.0.0.1:1"), account=Account.create(),
            contract_address="0x12",
            nonces=NonceStore(tmp_path / "m.sqlite"),
        )  # fmt: skip


@pytest.mark.parametrize(
    ("message", "outcome"),
    [
        ("already known", None),
        ("insufficient funds for gas * price + value", AuthenticationError),
        ("invalid sender", AuthenticationError),
        ("replacement transaction underpriced", NetworkError),
        ("nonce too low", "consumed"),
        ("exceeds block gas limit", ValidationError),
    ],
)
async def test_broadcast_rejections_are_classified(tmp_path, message, outcome) -> None:
    answers = {
        "eth_chainId": "0x539",
        "eth_getCode": "0x6000",
        "eth_getTransactionReceipt": None,
        "eth_getTransactionByHash": None,
        "eth_getTransactionCount": "0x5",  # "already known" looks for holes below
        "eth_sendRawTransaction": {"error": {"code": -32000, "message": message}},
    }
    async with rpc_server(answers) as server:
        client = await _client(server.url, tmp_path)
        signed = SignedSubmission(raw=b"\x02\x01", tx_hash="0x" + "cd" * 32, account_nonce=4)
        if outcome is None:
            await client.broadcast(signed)
        elif outcome == "consumed":
            from r3mes_desktop.adapters.chain.reverts import NonceConsumedError

            with pytest.raises(NonceConsumedError):
                await client.broadcast(signed)
        else:
            with pytest.raises(outcome):
                await client.broadcast(signed)
        await client.close()


async def test_nonce_too_low_for_our_own_mined_tx_is_success(tmp_path) -> None:
    receipts = iter([None, {"status": "0x1", "blockNumber": "0x9", "transactionHash": "0x"}])
    answers = {
        "eth_chainId": "0x539",
        "eth_getCode": "0x6000",
        "eth_getTransactionReceipt": lambda: web.json_response(
            {"jsonrpc": "2.0", "id": 1, "result": next(receipts)}
        ),
        "eth_getTransactionCount": "0x4",
        "eth_sendRawTransaction": {"error": {"code": -32000, "message": "nonce too low"}},
    }
    async with rpc_server(answers) as server:
        client = await _client(server.url, tmp_path)
        await client.broadcast(SignedSubmission(b"\x02", "0x" + "ef" * 32, 3))
        await client.close()


async def test_nonce_too_low_for_a_nonce_the_chain_has_not_confirmed_is_not_proof(
    tmp_path,
) -> None:
    """A node's "nonce too low" alone (a misbehaving node, an injected fault) must not let
    the saga sign the call again: the latest block must count past our nonce."""
    answers = {
        "eth_chainId": "0x539",
        "eth_getCode": "0x6000",
        "eth_getTransactionReceipt": None,
        "eth_getTransactionByHash": None,
        "eth_getTransactionCount": "0x3",
        "eth_sendRawTransaction": {"error": {"code": -32000, "message": "nonce too low"}},
    }
    async with rpc_server(answers) as server:
        client = await _client(server.url, tmp_path)
        with pytest.raises(NetworkError, match="latest block counts 3"):
            await client.broadcast(SignedSubmission(b"\x02", "0x" + "ef" * 32, 3))
        await client.close()


async def test_fallback_moves_to_the_next_url(tmp_path) -> None:
    dead = RpcTransport(f"http://127.0.0.1:{free_port()}")
    async with rpc_server({"eth_chainId": "0x539"}) as server:
        both = FallbackTransport([dead, RpcTransport(server.url)])
        assert await both.chain_id() == 1337
        await both.close()
