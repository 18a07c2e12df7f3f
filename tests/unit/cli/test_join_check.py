"""`r3mes-miner join FILE|URL` and `check`: against loopback fake nodes and IPFS daemons
(served from a thread: the command runs its own loop), with exit codes and output."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from r3mes_desktop.cli.exit_codes import ExitCode
from r3mes_desktop.support.config import load_settings, paths
from tests.helpers.service_fakes import ipfs_daemon, preflight_node, served_in_thread
from tests.integration.conftest import free_port
from tests.unit.cli.conftest import RunCli

pytestmark = pytest.mark.timeout(60)
CONTRACT = "0x" + "ab" * 20


@pytest.fixture
def network(tmp_path: Path) -> Iterator[tuple[Path, str, str]]:
    """A network file naming a healthy fake node and IPFS daemon: (file, rpc, ipfs)."""
    with served_in_thread(preflight_node(block_time=0), ipfs_daemon()) as (node, ipfs):
        path = tmp_path / "network.json"
        data = {
            "format": "r3mes-network/1",
            "name": "testnet",
            "chain_id": 1337,
            "rpc_urls": [node.url],
            "contract_address": CONTRACT,
            "contract_version": "r3mes-rounds/2",
            "ipfs_api": ipfs.url,
        }
        path.write_text(json.dumps(data), encoding="utf-8")
        yield path, node.url, ipfs.url


@pytest.fixture(autouse=True)
def _no_env_endpoints() -> Iterator[None]:
    names = [n for n in os.environ if n.startswith("R3MES_") and n.endswith(("_URLS", "_ID"))]
    saved = {n: os.environ.pop(n) for n in names}
    yield
    os.environ.update(saved)


def test_join_writes_the_settings_and_says_what(cli: RunCli, network: Any) -> None:
    path, rpc, ipfs = network
    code, out, err = cli("join", str(path))
    assert code == ExitCode.OK, err
    assert f"network testnet (chain 1337) from {path}" in out
    assert "rpc       passed   RPC" in out
    assert "ready: " in out
    assert f"wrote to {paths().settings_file}:" in out
    assert f"  chain_rpc_urls = {rpc}" in out
    assert "  network_name = testnet" in out
    settings = load_settings()
    assert settings.chain_rpc_urls == (rpc,)
    assert settings.ipfs_api_address == ipfs
    assert settings.network_name == "testnet"

    code, out, _ = cli("check", "--json")  # the configured network is now the joined one
    assert code == ExitCode.OK
    assert out["ok"] is True
    assert [c["name"] for c in out["checks"]] == [
        "rpc",
        "chain_id",
        "contract",
        "ipfs",
        "balance",
        "clock",
    ]
    assert out["network"] == "the configured network testnet (chain 1337)"


def test_join_json_reports_written_fields(cli: RunCli, network: Any) -> None:
    path, rpc, _ = network
    code, out, _ = cli("join", str(path), "--json")
    assert code == ExitCode.OK
    assert out["joined"] is True and out["forced"] is False
    assert out["written"]["chain_rpc_urls"] == [rpc]
    assert out["settings_file"] == str(paths().settings_file)


def test_join_with_a_required_check_failing_writes_nothing(cli: RunCli, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    path = tmp_path / "network.json"
    path.write_text(
        json.dumps(
            {"name": "down", "chain_id": 7, "rpc_urls": [dead], "contract_address": CONTRACT}
        ),
        encoding="utf-8",
    )
    code, out, _ = cli("join", str(path), "--timeout", "1")
    assert code == ExitCode.CHECK_FAILED
    assert f"RPC: cannot reach {dead} (connection refused)" in out
    assert "ipfs      FAILED   IPFS: no IPFS API address given" in out
    assert "nothing written" in out
    assert not paths().settings_file.exists()

    code, out, _ = cli("check", "--network", str(path), "--json", "--timeout", "1")
    assert code == ExitCode.CHECK_FAILED
    assert out["ok"] is False


def test_a_bad_network_file_names_the_field(cli: RunCli, tmp_path: Path) -> None:
    path = tmp_path / "network.json"
    path.write_text(json.dumps({"name": "x", "chain_id": 0}), encoding="utf-8")
    code, _, err = cli("join", str(path))
    assert code == ExitCode.USAGE
    assert "network file: rpc_urls: required" in err
    code, _, err = cli("join", "http://example.org/network.json")
    assert code == ExitCode.USAGE
    assert "expected https:// (http:// only for 127.0.0.1)" in err


def test_check_on_the_devnet_has_nothing_to_reach(cli: RunCli) -> None:
    code, out, _ = cli("check")
    assert code == ExitCode.OK
    assert "pre-flight of the embedded devnet" in out
    assert "embedded devnet, which needs no connection" in out
