"""A wrong chain id or an address without contract code is a configuration problem (exit 3),
reported once, with the RPC session closed (no aiohttp "Unclosed client session" noise).

The CLI runs as a real process against a JSON-RPC node on 127.0.0.1 served from a thread of
this test: the unclosed-session warning comes from garbage collection at interpreter exit,
which only a separate process shows reliably.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from r3mes_desktop.cli.exit_codes import ExitCode
from r3mes_desktop.support.redact import SECRETS
from tests.unit.cli.conftest import RunCli

pytestmark = pytest.mark.timeout(60)

KEY = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
CONTRACT = "0x" + "ab" * 20


class _Node(BaseHTTPRequestHandler):
    """eth_chainId answers 5; eth_getCode answers empty code (no contract)."""

    answers: ClassVar[dict[str, str]] = {"eth_chainId": "0x5", "eth_getCode": "0x"}

    def do_POST(self) -> None:
        payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        body: dict[str, object] = {"jsonrpc": "2.0", "id": payload["id"]}
        if payload["method"] in self.answers:
            body["result"] = self.answers[payload["method"]]
        else:
            body["error"] = {"code": -32601, "message": "method not found"}
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def node() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Node)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def keystore(cli: RunCli, tmp_path: Path) -> Path:
    """An imported key (fast scrypt) and its password file."""
    pw_file = tmp_path / "pw"
    pw_file.write_text("correct horse battery staple\n")
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    try:
        code, _, err = cli(
            "keys", "import", "--key-file", str(key_file), "--password-file", str(pw_file),
            "--scrypt-n", "16384",
        )  # fmt: skip
    finally:
        SECRETS.forget_all()
    assert code == ExitCode.OK, err
    return pw_file


def _run(node: str, pw_file: Path, chain_id: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.update(
        R3MES_CHAIN_RPC_URLS=node,
        R3MES_CHAIN_ID=chain_id,
        R3MES_CONTRACT_ADDRESS=CONTRACT,
        R3MES_IPFS_API_ADDRESS="http://127.0.0.1:9",
        PYTHONUNBUFFERED="1",
    )
    return subprocess.run(
        [sys.executable, "-m", "r3mes_desktop.cli", "run", "--password-file", str(pw_file)],
        env=env,
        capture_output=True,
        text=True,
        timeout=50,
    )


@pytest.mark.parametrize(
    ("chain_id", "message"),
    [
        ("1337", "chain_id: http://127.0.0.1"),  # the node is on chain 5
        ("5", "contract_address: no contract code at"),
    ],
)
def test_wrong_chain_or_contract_exits_3_without_unclosed_session(
    node: str, keystore: Path, chain_id: str, message: str
) -> None:
    proc = _run(node, keystore, chain_id)
    assert proc.returncode == ExitCode.CONFIG, proc.stderr
    assert message in proc.stderr
    assert "Unclosed" not in proc.stderr, proc.stderr
    assert proc.stderr.count("r3mes-miner: error:") == 1, proc.stderr
