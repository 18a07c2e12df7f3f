"""The pre-flight against the embedded devnet's EVM (the real contract), loopback fake nodes
(a refusing one, a hung one, a wrong chain, no contract, an old contract) and fake IPFS
daemons: one line per check, a failure never hides the others, each check times out on
its own."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from r3mes_desktop.app.preflight import (
    FAILED,
    PASSED,
    SKIPPED,
    WARNING,
    Check,
    Target,
    describe,
    preflight,
    required_passed,
)
from r3mes_desktop.core.clock import ManualClock
from tests.helpers.service_fakes import (
    hanging_server,
    ipfs_daemon,
    open_devnet,
    preflight_node,
)
from tests.integration.conftest import free_port

pytestmark = pytest.mark.timeout(60)
CONTRACT = "0x" + "ab" * 20
ACCOUNT = "0x" + "cd" * 20
NOW = 1_700_000_000.0


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def target(rpc: str, ipfs: str, **changes: Any) -> Target:
    values: dict[str, Any] = {
        "rpc_urls": (rpc,),
        "chain_id": 1337,
        "contract_address": CONTRACT,
        "ipfs_api": ipfs,
        "account": ACCOUNT,
    }
    values.update(changes)
    return Target(**values)


async def run(t: Target, **kw: Any) -> dict[str, Check]:
    checks = await preflight(t, clock=ManualClock(NOW), **kw)
    assert [c.name for c in checks] == ["rpc", "chain_id", "contract", "ipfs", "balance", "clock"]
    return by_name(checks)


async def test_a_healthy_network_passes_every_check() -> None:
    async with preflight_node(block_time=NOW - 4) as node, ipfs_daemon() as ipfs:
        checks = await run(target(node.url, ipfs.url))
    assert {c.status for c in checks.values()} == {PASSED}, checks
    assert checks["rpc"].line == f"RPC {node.url} answers"
    assert checks["chain_id"].line == "chain id 1337, as expected"
    assert checks["contract"].line == f"contract {CONTRACT} is r3mes-rounds/2"
    assert checks["ipfs"].line == f"IPFS API {ipfs.url} answers (version 0.66.1)"
    assert checks["balance"].line.startswith("0xcdcd…cdcd holds 10 ETH: gas for at least")
    assert checks["clock"].line == "clock within 4 s of the chain's latest block"


async def test_a_refusing_node_fails_rpc_skips_what_needs_it_and_still_checks_ipfs() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with ipfs_daemon() as ipfs:
        checks = await run(target(url, ipfs.url))
    assert checks["rpc"].status == FAILED
    assert checks["rpc"].line == f"RPC: cannot reach {url} (connection refused)"
    for name in ("chain_id", "contract", "balance", "clock"):
        assert checks[name].status == SKIPPED
        assert checks[name].line == "not checked: the RPC did not answer"
    assert checks["ipfs"].status == PASSED
    assert not required_passed(list(checks.values()))


async def test_a_hung_node_and_a_hung_daemon_each_time_out_on_their_own() -> None:
    release = asyncio.Event()
    async with hanging_server(release) as node, hanging_server(release) as ipfs:
        started = time.monotonic()
        try:
            checks = await run(target(node.url, ipfs.url), timeout_s=0.5)
        finally:
            release.set()
        elapsed = time.monotonic() - started
    assert checks["rpc"].status == FAILED
    assert checks["rpc"].line == f"RPC: cannot reach {node.url} (no answer within 0.5 s)"
    assert checks["ipfs"].status == FAILED
    assert checks["ipfs"].line == f"IPFS API {ipfs.url}: no answer within 0.5 s"
    assert elapsed < 5  # the two timeouts ran side by side, each about 0.5 s


async def test_wrong_chain_and_unreachable_ipfs_are_both_reported() -> None:
    ipfs = f"/ip4/127.0.0.1/tcp/{free_port()}"
    async with preflight_node(chain_id=5, block_time=NOW) as node:
        checks = await run(target(node.url, ipfs))
    assert checks["chain_id"].status == FAILED
    assert checks["chain_id"].line == (
        "chain id: the RPC is on chain 5, the network is chain 1337: wrong RPC URL or wrong network"
    )
    assert checks["contract"].status == PASSED  # checked all the same
    assert checks["ipfs"].status == FAILED
    assert checks["ipfs"].line == f"IPFS API {ipfs}: unreachable"


@pytest.mark.parametrize(
    ("node_kw", "target_kw", "expected"),
    [
        ({"code": "0x"}, {}, f"no contract at {CONTRACT} on chain 1337: wrong address or"),
        ({"version": "r3mes-rounds/1"}, {}, "the contract at 0xabab…abab speaks 'r3mes-rounds/1'"),
        (
            {},
            {"contract_version": "r3mes-rounds/3"},
            "the contract at 0xabab…abab is 'r3mes-rounds/2', the network file says",
        ),
    ],
)
async def test_contract_code_and_version(
    node_kw: dict[str, Any], target_kw: dict[str, Any], expected: str
) -> None:
    async with preflight_node(block_time=NOW, **node_kw) as node, ipfs_daemon() as ipfs:
        checks = await run(target(node.url, ipfs.url, **target_kw))
    assert checks["contract"].status == FAILED
    assert checks["contract"].line.startswith(expected)
    assert checks["balance"].status == PASSED  # the other checks still ran


async def test_low_or_no_balance_and_clock_skew_only_warn() -> None:
    # 2 gwei base fee: max fee 5 gwei, 0.004 ETH a submission at the gas cap
    async with (
        preflight_node(balance_wei=10**16, base_fee_wei=2 * 10**9, block_time=NOW + 120) as node,
        ipfs_daemon() as ipfs,
    ):
        checks = await run(target(node.url, ipfs.url))
    assert checks["balance"].status == WARNING
    assert checks["balance"].line == (
        "0xcdcd…cdcd holds 0.01 ETH: gas for 2 submissions at the current fee; "
        "fund it with at least 0.04 ETH"
    )
    assert checks["clock"].status == WARNING
    assert checks["clock"].line.startswith("your clock is 120 s behind the chain's latest block")
    assert required_passed(list(checks.values()))  # joining may go on

    async with (
        preflight_node(balance_wei=0, block_time=NOW - 3600) as node,
        ipfs_daemon() as ipfs,
    ):
        checks = await run(target(node.url, ipfs.url))
    assert checks["balance"].line == "0xcdcd…cdcd holds no ETH: submissions fail until it is funded"
    assert checks["clock"].line.startswith("the latest block is 60 min old: the chain is idle")
    assert checks["ipfs"].status == PASSED


async def test_no_key_skips_the_balance_and_a_failing_backup_url_warns() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    async with preflight_node(block_time=NOW) as node, ipfs_daemon() as ipfs:
        checks = await run(target(node.url, ipfs.url, rpc_urls=(node.url, dead), account=None))
    assert checks["balance"].status == SKIPPED
    assert checks["balance"].line.startswith("no miner key yet: create or import one")
    assert checks["rpc"].status == WARNING
    assert (
        checks["rpc"].line == f"RPC: 1 of 2 URLs answer; cannot reach {dead} (connection refused)"
    )
    assert checks["chain_id"].status == PASSED  # the answering node is used
    summary = describe(list(checks.values())).splitlines()[-1]
    assert summary == "ready: 4 passed, 1 warning, 0 failed, 1 skipped"


async def test_against_the_devnet_contract(tmp_path: Path) -> None:
    """The embedded devnet's EVM runs the real compiled contract: code, VERSION(), a funded
    miner's balance and a real latest block, read through the same checks."""
    devnet = await open_devnet(tmp_path)

    class Borrowed:  # the devnet's EVM, not closed by the pre-flight (the devnet owns it)
        def __getattr__(self, name: str) -> Any:
            return getattr(devnet.evm, name)

        async def close(self) -> None:
            return None

    try:
        chain_id = await devnet.evm.chain_id()
        devnet_target = target(
            "http://devnet.invalid",
            "",
            chain_id=chain_id,
            contract_address=devnet.chain.contract_address,
            account=devnet.chain.miner_address,
        )
        async with ipfs_daemon() as ipfs:
            checks = await preflight(
                Target(**{**devnet_target.__dict__, "ipfs_api": ipfs.url}),
                node_factory=lambda url, timeout: Borrowed(),  # type: ignore[arg-type,return-value]
            )
    finally:
        await devnet.close()
    found = by_name(checks)
    assert found["contract"].line == f"contract {devnet.chain.contract_address} is r3mes-rounds/2"
    assert found["chain_id"].line == f"chain id {chain_id}, as expected"
    assert found["balance"].status == PASSED
    assert found["clock"].status in (PASSED, WARNING)
    assert required_passed(checks)
    text = describe(checks)
    assert text.splitlines()[-1].startswith("ready: ")
