"""The devnet learns: its aggregator turns accepted updates into model versions that the
next rounds train on, and every version's bytes and CID are reproducible from the accepted
updates of the round it names (the chaos invariant "every model version's CID is
reproducible"), with the held-out loss it recorded."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from r3mes_desktop.adapters.chain.views import VERDICT_ACCEPTED
from r3mes_desktop.adapters.devnet.devnet import Devnet
from r3mes_desktop.adapters.mining import learning
from r3mes_desktop.adapters.mining.presets import make_plan
from r3mes_desktop.app.builders import JOURNAL_FILE
from r3mes_desktop.app.devnet_aggregator import DevnetAggregator
from r3mes_desktop.app.devnet_validator import DevnetValidator
from tests.helpers.service_fakes import open_devnet

pytestmark = pytest.mark.timeout(400)


async def _drain(devnet: Devnet) -> None:
    """Close the rounds the stopped miner finished, then let the devnet's validator and
    aggregator catch up (the miner may stop before they reach its last rounds)."""
    await devnet.operator.ensure_rounds(devnet.miner_address)
    validator = await DevnetValidator.open(devnet)
    aggregator = await DevnetAggregator.open(devnet)
    try:
        for _ in range(10):
            checked = await validator.validator.pass_once()
            made = await aggregator.aggregator.pass_once()
            if not (checked.decided or checked.posted or made.published):
                break
    finally:
        await aggregator.close()
        await validator.close()


def _fetched_rounds(journal: Path) -> dict[int, tuple[list[str], dict[str, Any]]]:
    """Committed transactions of rounds on a model version: their states in order, and what
    FETCH journaled."""
    conn = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT id, round_id, spec, fetched FROM transactions WHERE state = 'committed'"
        ).fetchall()
        found = {}
        for tx, round_id, spec, files in rows:
            if json.loads(spec).get("model_version", 0) < 1:
                continue
            steps = [
                r[0]
                for r in conn.execute(
                    "SELECT new_state FROM events WHERE transaction_id = ? AND kind = "
                    "'transition' ORDER BY id",
                    (tx,),
                )
            ]
            found[round_id] = (steps, json.loads(files) if files else {})
        return found
    finally:
        conn.close()


async def test_versions_chain_and_reproduce_from_their_accepted_updates(tmp_path) -> None:
    env = {
        **os.environ,
        "R3MES_DATA_DIR": str(tmp_path / "data"),
        "R3MES_CONFIG_DIR": str(tmp_path / "config"),
        "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring",
    }
    done = subprocess.run(  # noqa: ASYNC221 - the miner must be gone before the devnet reopens
        [sys.executable, "-m", "r3mes_desktop.cli", "-q", "run", "--fast", "--rounds", "40"],
        env=env, capture_output=True, timeout=360, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    devnet = await open_devnet(tmp_path / "data")
    try:
        await _drain(devnet)
        chain = devnet.chain
        current = await chain.current_version()
        assert current >= 2, "the devnet published fewer than two versions in 40 rounds"
        losses = []
        for version_id in range(1, current + 1):
            version = await chain.version_info(version_id)
            assert version is not None and version.parent_id == version_id - 1
            info = await chain.round_info(version.round_id)
            assert info is not None and info.model_version == version_id - 1
            subs = [await chain.submission_info(version.round_id, m)
                    for m in await chain.submitters(version.round_id)]  # fmt: skip
            accepted = [s for s in subs if s is not None and s.verdict == VERDICT_ACCEPTED]
            assert len(accepted) == version.updates
            plan = make_plan(
                round_id=version.round_id, seed=1, base_model_id=info.base_model_id,
                steps=info.steps, hyperparams=json.loads(info.hyperparams),
            )  # fmt: skip
            packages = [await devnet.store.cat(s.cid) for s in accepted]
            again = learning.aggregate_job({"packages": packages, "plan": plan.to_json()})
            assert bytes.fromhex(again["sha256"]) == version.content_hash
            assert devnet.store.cid_of(again["adapter"]) == version.cid
            assert abs(again["eval_loss"] - version.eval_loss) < 1e-6
            losses.append(version.eval_loss)
        # Rounds on a published version were trained from it and still verified.
        last = await chain.last_round_id()
        infos = [await chain.round_info(r) for r in range(1, last + 1)]
        later = [i.round_id for i in infos if i is not None and i.model_version >= 1]
        verdicts = [await chain.submission_info(r, devnet.miner_address) for r in later]
        assert any(v is not None and v.verdict == VERDICT_ACCEPTED for v in verdicts)
        assert losses[-1] < losses[0], losses
        assert list((tmp_path / "data" / "models").glob("*.safetensors"))
        # ... each through its own FETCH step: the adapter journaled, verified, then trained on
        fetched = _fetched_rounds(tmp_path / "data" / JOURNAL_FILE)
        assert fetched, "no committed round on a published version went through FETCH"
        for round_id, (steps, files) in fetched.items():
            info = await chain.round_info(round_id)
            assert info is not None and info.model_version >= 1
            version = await chain.version_info(info.model_version)
            assert version is not None
            assert files["adapter"]["cid"] == version.cid
            assert files["adapter"]["sha256"] == version.content_hash.hex()
            assert steps[:4] == ["pending", "fetch", "training", "ipfs_upload"], steps
            assert steps[-1] == "committed", steps
    finally:
        await devnet.close()
