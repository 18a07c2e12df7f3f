"""Joining a real network as separate processes on anvil + js-ipfs: the operator deploys and
writes the network file, `r3mes-miner join` checks and writes the settings (warning that the
key holds no gas yet), `check` passes once it is funded, and `run` says where it is
connected and skips, with its reason, a round whose deadline has passed."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bench.chaos.peers import ANVIL_KEY0
from r3mes_desktop.adapters.chain.keystore import Keystore
from tests.helpers.role_tools import cli, key_file, send

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]
PASSWORD = "integration-password"
FUNDER = ANVIL_KEY0  # anvil's account 0: deploys and funds


def _miner(args: list[str], env: dict[str, str], *, ok: tuple[int, ...] = (0,)) -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "r3mes_desktop.cli", "--json", *args],
        capture_output=True, timeout=120, env=env, check=False,
    )  # fmt: skip
    assert done.returncode in ok, (args, done.stdout[-2000:], done.stderr[-3000:])
    return json.loads(done.stdout.decode())


def _wait_for(path: Path, texts: list[str], proc: subprocess.Popen[bytes], within: float) -> str:
    """Poll the miner's output (blocking: nothing else runs on the test's loop meanwhile)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        seen = path.read_text(encoding="utf-8", errors="replace")
        if all(t in seen for t in texts):
            return seen
        assert proc.poll() is None, seen[-3000:]
        time.sleep(0.2)
    raise AssertionError(f"never saw {texts}:\n{path.read_text()[-3000:]}")


async def test_join_check_and_run_say_where_the_miner_is(anvil, jsipfs, tmp_path) -> None:
    state = tmp_path / "operator"
    op_key = key_file(tmp_path / "operator.key", FUNDER)
    net_file = tmp_path / "network.json"
    cli(
        "r3mes_desktop.cli.operator", "deploy", "--rpc-url", anvil, "--key-file", str(op_key),
        "--out", str(net_file), "--ipfs-api", jsipfs, "--name", "it", "--state-dir", str(state),
    )  # fmt: skip
    network = json.loads(net_file.read_text())

    home = tmp_path / "miner"
    address = Keystore(home / "data" / "keys", scrypt_n=2**4).import_hex(
        os.urandom(32).hex(), PASSWORD
    )
    (home / "password.txt").write_text(PASSWORD + "\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("R3MES_")}
    env.update(
        R3MES_DATA_DIR=str(home / "data"), R3MES_CONFIG_DIR=str(home / "config"),
        R3MES_LOG_DIR=str(home / "logs"), R3MES_CACHE_DIR=str(home / "cache"),
        PYTHON_KEYRING_BACKEND="keyring.backends.null.Keyring", R3MES_NOTIFY_TRAY="false",
    )  # fmt: skip

    joined = _miner(["join", str(net_file)], env)
    assert joined["joined"] and joined["written"]["network_name"] == "it"
    status = {c["name"]: c["status"] for c in joined["checks"]}
    assert status == {
        "rpc": "passed", "chain_id": "passed", "contract": "passed", "ipfs": "passed",
        "balance": "warning", "clock": status["clock"],
    }  # fmt: skip
    balance = next(c for c in joined["checks"] if c["name"] == "balance")
    assert balance["line"].endswith("holds no ETH: submissions fail until it is funded")
    settings = (home / "config" / "settings.toml").read_text()
    assert network["contract_address"] in settings and 'network_name = "it"' in settings

    await send(anvil, FUNDER, address, value=10**19)
    checked = _miner(["check"], env)
    assert checked["ok"], checked
    assert {c["status"] for c in checked["checks"]} == {"passed"}, checked

    op = ["--network", str(net_file), "--key-file", str(op_key), "--state-dir", str(state)]
    # open-round counts --deadline-in from the latest block: mine a fresh one first, and
    # leave room for the operator's own start (seconds on a loaded machine), or the deadline
    # lands before the opening block itself ("deadline in the past")
    await send(anvil, FUNDER, address, value=1)
    opened = cli(
        "r3mes_desktop.cli.operator", "open-round", *op, "--round-id", "1", "--steps", "8",
        "--preset", "tiny", "--deadline-in", "15",
    )  # fmt: skip
    await asyncio.sleep(max(0.0, opened["deadline"] + 1.2 - time.time()))  # before it starts
    log = home / "run.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(  # noqa: ASYNC220 - starts it, never blocks on it
            [sys.executable, "-m", "r3mes_desktop.cli", "run",
             "--password-file", str(home / "password.txt")],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        contract = network["contract_address"]
        seen = _wait_for(
            log,
            [
                f"connected to it (chain 1337), contract {contract[:6]}…{contract[-4:]}, "
                "1 open round for you",
                "round 1: its deadline ",
                "has passed: skipped",
            ],
            proc,
            180,
        )
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        code = proc.wait(timeout=60)
    assert code == 143, seen[-3000:]
    assert seen.count("has passed: skipped") == 1
    assert "round 1: training" not in seen
