"""The network's roles as separate processes on anvil + js-ipfs: the operator deploys and
opens rounds, two miners mine them, a free-rider copies one miner's update, and a validator
(killed with -9 once, then restarted) posts exactly one verdict per submission; accepted
work is credited once, the copy earns nothing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from eth_account import Account

from bench.chaos.peers import ANVIL_KEY0
from r3mes_desktop.adapters.chain.abi import encode_call
from r3mes_desktop.adapters.chain.keystore import Keystore
from r3mes_desktop.adapters.chain.transport import RpcTransport
from r3mes_desktop.core.pow import pow_digest
from r3mes_desktop.core.workproof import Reason
from tests.helpers.role_tools import cli, key_file, send

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
FUNDER = ANVIL_KEY0
PASSWORD = "integration-password"


def _miner_home(root: Path, name: str) -> tuple[Path, str]:
    home = root / name
    key = os.urandom(32).hex()
    address = Keystore(home / "data" / "keys", scrypt_n=2**4).import_hex(key, PASSWORD)
    (home / "password.txt").write_text(PASSWORD + "\n", encoding="utf-8")
    return home, address


def _miner_env(home: Path, network: dict) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        R3MES_DATA_DIR=str(home / "data"), R3MES_CONFIG_DIR=str(home / "config"),
        R3MES_LOG_DIR=str(home / "logs"), R3MES_CACHE_DIR=str(home / "cache"),
        R3MES_CHAIN_RPC_URLS=network["rpc_urls"][0], R3MES_CHAIN_ID=str(network["chain_id"]),
        R3MES_CONTRACT_ADDRESS=network["contract_address"],
        R3MES_IPFS_API_ADDRESS=network["ipfs_api"],
        PYTHON_KEYRING_BACKEND="keyring.backends.null.Keyring", R3MES_NOTIFY_TRAY="false",
    )  # fmt: skip
    return env


def _rows(path: Path, table: str) -> int:
    """Rows in a journal another process is writing (0 while it is being created)."""
    if not path.exists():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(path)) as db:
            return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def _solve(gradient_hash: bytes, miner: str, round_id: int, difficulty: int) -> int:
    target = 1 << (256 - difficulty)
    nonce = 0
    while int.from_bytes(pow_digest(gradient_hash, miner, round_id, nonce), "big") >= target:
        nonce += 1
    return nonce


async def test_operator_miners_free_rider_and_a_killed_validator(anvil, jsipfs, tmp_path) -> None:
    state = tmp_path / "operator"
    op_key = key_file(tmp_path / "operator.key", ANVIL_KEY0)
    net_file = tmp_path / "network.json"
    deployed = cli(
        "r3mes_desktop.cli.operator", "deploy", "--rpc-url", anvil, "--key-file", str(op_key),
        "--out", str(net_file), "--ipfs-api", jsipfs, "--name", "it", "--state-dir", str(state),
    )  # fmt: skip
    network = json.loads(net_file.read_text())
    assert network["contract_address"] == deployed["contract_address"]
    again = cli(
        "r3mes_desktop.cli.operator", "deploy", "--rpc-url", anvil, "--key-file", str(op_key),
        "--out", str(net_file), "--ipfs-api", jsipfs, "--state-dir", str(state),
    )  # fmt: skip
    assert again["already_deployed"] and again["contract_address"] == deployed["contract_address"]

    validator = Account.create()
    rider = Account.create()
    homes = [_miner_home(tmp_path, f"miner{i}") for i in (1, 2)]
    for address in [validator.address, rider.address, *(a for _, a in homes)]:
        await send(anvil, FUNDER, address, value=10**19)
    v_key = key_file(tmp_path / "validator.key", "0x" + bytes(validator.key).hex())
    op = ["--network", str(net_file), "--key-file", str(op_key), "--state-dir", str(state)]
    cli("r3mes_desktop.cli.operator", "add-validator", *op, validator.address)
    assert not cli("r3mes_desktop.cli.operator", "add-validator", *op, validator.address)["changed"]
    # The rounds train on real text: our own docs, published as a byte-level dataset.
    corpus = Path(__file__).parents[2] / "docs" / "validation.md"
    dataset = cli("r3mes_desktop.cli.operator", "publish-dataset", "--network", str(net_file),
                   str(corpus))  # fmt: skip
    on_text = ["--dataset-cid", dataset["dataset_cid"], "--dataset-sha256",
               dataset["dataset_sha256"]]  # fmt: skip
    for round_id in (1, 2):
        opened = cli(
            "r3mes_desktop.cli.operator", "open-round", *op, "--round-id", str(round_id),
            "--steps", "8", "--preset", "tiny", "--difficulty", "16", "--reward", "40", *on_text,
        )  # fmt: skip
        assert opened["opened"]
    assert not cli("r3mes_desktop.cli.operator", "open-round", *op, "--round-id", "1")["opened"]

    miners = []
    for home, _ in homes:
        out = (home / "out.log").open("wb")
        miners.append(subprocess.Popen(  # noqa: ASYNC220 - starts it, never blocks on it
            [sys.executable, "-m", "r3mes_desktop.cli", "-q", "run", "--rounds", "2",
             "--password-file", str(home / "password.txt")],
            env=_miner_env(home, network), stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        ))  # fmt: skip
        out.close()
    for proc, (home, _) in zip(miners, homes, strict=True):
        assert proc.wait(timeout=400) == 0, (home / "out.log").read_text()[-3000:]

    # The free-rider copies miner 1's round-2 update (CID and hash) with its own proof of work.
    transport = RpcTransport(anvil)
    contract = network["contract_address"]
    try:
        from r3mes_desktop.adapters.chain.abi import decode_output

        raw = await transport.call({"to": contract, "data": encode_call(
            "submissionOf", 2, homes[0][1])})  # fmt: skip
        original = decode_output("submissionOf", raw)
        cid, ghash, openings = original[0], original[1], original[5]
    finally:
        await transport.close()
    nonce = _solve(bytes(ghash), rider.address, 2, 16)
    await send(anvil, "0x" + bytes(rider.key).hex(), contract,
                data=encode_call("submitGradient", 2, cid, bytes(ghash), nonce))  # fmt: skip
    # ...and answers the challenge with the copied miner's openings, all it can get.
    await send(anvil, "0x" + bytes(rider.key).hex(), contract,
                data=encode_call("completeTask", 2, openings))  # fmt: skip

    v_dir = tmp_path / "validator"
    v_args = ["run", "--network", str(net_file), "--key-file", str(v_key),
              "--data-dir", str(v_dir), "--window-s", "1", "--poll-s", "0.5"]  # fmt: skip
    killed = subprocess.Popen(  # noqa: ASYNC220 - starts it, never blocks on it
        [sys.executable, "-m", "r3mes_desktop.cli.validator", *v_args],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    journal = v_dir / "validator.sqlite"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # kill -9 once a verdict is journaled
        if _rows(journal, "verdicts") >= 1:
            break
        await asyncio.sleep(0.05)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait(timeout=30)
    await send(anvil, FUNDER, validator.address, value=1)  # chain time moves on (window)
    final = cli("r3mes_desktop.cli.validator", *v_args, "--passes", "3", timeout=400)
    assert final["errors"] == []

    transport = RpcTransport(anvil)
    try:
        from r3mes_desktop.adapters.chain.abi import decode_output

        async def view(name, *args):
            return decode_output(name, await transport.call(
                {"to": contract, "data": encode_call(name, *args)}))  # fmt: skip

        for round_id in (1, 2):
            subs = {a: await view("submissionOf", round_id, a) for _, a in homes}
            assert all(s[6] == 1 and s[7] == 0 for s in subs.values()), subs  # accepted
            assert len({s[1] for s in subs.values()}) == 2  # two miners, two updates
        copied = await view("submissionOf", 2, rider.address)
        assert (copied[6], copied[7]) == (2, int(Reason.NOT_BOUND))
        assert await view("credits", rider.address) == 0
        for _, address in homes:
            assert await view("credits", address) == 2 * 40  # each accepted round once
        assert sum([await view("verdictCount", r) for r in (1, 2)]) == 5
        # Exactly once: the validator's account sent one transaction per verdict, no more.
        assert await transport.nonce(validator.address) == 5
    finally:
        await transport.close()
    status = cli("r3mes_desktop.cli.validator", "status", "--data-dir", str(v_dir))
    assert sorted(r["state"] for r in status["verdicts"]) == ["posted"] * 5

    # The aggregator (killed with -9 once it journaled a version) turns round 1 into model
    # version 1 exactly once; round 2 trained on version 0 and is passed over.
    aggregator = Account.create()
    await send(anvil, FUNDER, aggregator.address, value=10**19)
    a_key = key_file(tmp_path / "aggregator.key", "0x" + bytes(aggregator.key).hex())
    for round_id in ("1", "2"):
        cli("r3mes_desktop.cli.operator", "close-round", *op, round_id)
    cli("r3mes_desktop.cli.operator", "add-aggregator", *op, aggregator.address)
    a_state = tmp_path / "aggregator"
    a_args = ["aggregate", "--network", str(net_file), "--key-file", str(a_key),
              "--state-dir", str(a_state)]  # fmt: skip
    killed = subprocess.Popen(  # noqa: ASYNC220 - starts it, never blocks on it
        [sys.executable, "-m", "r3mes_desktop.cli.operator", *a_args],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    a_journal = a_state / "aggregator" / "aggregator.sqlite"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and killed.poll() is None:
        if _rows(a_journal, "versions") >= 1:
            break
        await asyncio.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(killed.pid, signal.SIGKILL)
    killed.wait(timeout=30)
    aggregated = cli("r3mes_desktop.cli.operator", *a_args, "--passes", "3", timeout=300)
    assert aggregated["current_version"] == 1 and aggregated["errors"] == []

    transport = RpcTransport(anvil)
    try:
        from r3mes_desktop.adapters.chain.abi import decode_output

        async def view2(name, *args):
            return decode_output(name, await transport.call(
                {"to": contract, "data": encode_call(name, *args)}))  # fmt: skip

        version = await view2("versions", 1)
        assert version[4] == 1 and version[5] == 2  # round 1, both miners' updates
        assert await transport.nonce(aggregator.address) == 1  # one publishVersion, ever
    finally:
        await transport.close()

    # A round opened now trains on version 1: a miner fetches it from IPFS, trains from it,
    # and the validator (fetching it too) accepts the work.
    opened = cli("r3mes_desktop.cli.operator", "open-round", *op, "--round-id", "3",
                  "--steps", "8", "--preset", "tiny", "--difficulty", "16", *on_text)  # fmt: skip
    assert opened["model_version"] == 1
    home, address = homes[1]
    out = (home / "out3.log").open("wb")
    third = subprocess.Popen(  # noqa: ASYNC220 - starts it, never blocks on it
        [sys.executable, "-m", "r3mes_desktop.cli", "-q", "run", "--rounds", "1",
         "--password-file", str(home / "password.txt")],
        env=_miner_env(home, network), stdout=out, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    out.close()
    assert third.wait(timeout=300) == 0, (home / "out3.log").read_text()[-3000:]
    assert list((home / "data" / "models").glob("*.safetensors"))  # fetched and cached
    final = cli("r3mes_desktop.cli.validator", *v_args, "--passes", "2", timeout=300)
    transport = RpcTransport(anvil)
    try:
        raw = await transport.call({"to": contract, "data": encode_call(
            "submissionOf", 3, address)})  # fmt: skip
        from r3mes_desktop.adapters.chain.abi import decode_output

        assert decode_output("submissionOf", raw)[6:8] == (1, 0)  # accepted
    finally:
        await transport.close()
