"""The devnet learns: its aggregator turns accepted updates into model versions that the
next rounds train on, and every version's bytes and CID are reproducible from the accepted
updates of the round it names (the chaos invariant "every model version's CID is
reproducible"), with the held-out loss it recorded."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from r3mes_desktop.adapters.chain.views import VERDICT_ACCEPTED
from r3mes_desktop.adapters.devnet.devnet import Devnet
from r3mes_desktop.adapters.mining import learning
from r3mes_desktop.adapters.mining.presets import make_plan
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
    finally:
        await devnet.close()
