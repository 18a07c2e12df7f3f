"""The network learns from accepted updates: aggregation is reproducible, training starts
from the named adapter, and the held-out loss falls version after version."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from r3mes_desktop.adapters.mining import learning, training
from r3mes_desktop.adapters.mining.presets import make_plan
from r3mes_desktop.core import workproof
from r3mes_desktop.core.errors import ValidationError

BASE = "test-network-lm"


def plan_for(miner: str, round_id: int, adapter: learning.Adapter | None, steps: int = 6):
    digest = workproof.assignment(500 + round_id, miner, round_id)
    plan = make_plan(
        round_id=round_id,
        seed=workproof.training_seed(digest),
        base_model_id=BASE,
        steps=steps,
        hyperparams={"preset": "tiny"},
    )
    if adapter is None:
        return plan
    return dataclasses.replace(plan, adapter_sha256=learning.adapter_sha256(adapter))


def train(miner: str, round_id: int, adapter: learning.Adapter) -> tuple[learning.Adapter, int]:
    run = training.RoundTraining(
        plan_for(miner, round_id, adapter), device=training.resolve_device("cpu"), adapter=adapter
    )
    while run.step < run.plan.steps:
        run.train_step()
    out = run.output()
    return learning.update_tensors(out.data), out.tokens


def test_aggregation_is_a_token_weighted_mean_reproducible_to_the_byte() -> None:
    a = {"x": np.array([1.0, 2.0], dtype=np.float32), "y": np.ones(3, dtype=np.float32)}
    b = {"x": np.array([3.0, 6.0], dtype=np.float32), "y": np.zeros(3, dtype=np.float32)}
    merged = learning.aggregate([(a, 100), (b, 300)])
    assert merged["x"].tolist() == [2.5, 5.0] and merged["y"].tolist() == [0.25] * 3
    assert merged["x"].dtype == np.float32
    again = learning.aggregate([(b, 300), (a, 100)])
    assert learning.adapter_bytes(again) == learning.adapter_bytes(merged)
    with pytest.raises(ValueError, match="at least one"):
        learning.aggregate([])
    with pytest.raises(ValueError, match="different tensors"):
        learning.aggregate([(a, 1), ({"x": a["x"]}, 1)])


def test_training_starts_from_the_named_adapter_and_refuses_another() -> None:
    genesis = learning.genesis_adapter(plan_for("0x" + "01" * 20, 1, None))
    shifted = {k: v + np.float32(0.01) for k, v in genesis.items()}
    plan = plan_for("0x" + "01" * 20, 1, shifted)
    run = training.RoundTraining(plan, device=training.resolve_device("cpu"), adapter=shifted)
    assert all(np.array_equal(p.detach().numpy(), shifted[k]) for k, p in run.params.items())
    with pytest.raises(ValidationError, match="sha256"):
        training.RoundTraining(plan, device=training.resolve_device("cpu"), adapter=genesis)
    with pytest.raises(ValidationError, match="none was given"):
        training.RoundTraining(plan, device=training.resolve_device("cpu"))


def test_three_miners_make_a_network_whose_held_out_loss_falls() -> None:
    miners = [f"0x{i:040x}" for i in (1, 2, 3)]
    probe = plan_for(miners[0], 1, None)
    adapter = learning.genesis_adapter(probe)
    losses = [learning.eval_loss(probe, adapter)]
    for version in (1, 2, 3):
        updates = [train(m, version, adapter) for m in miners]
        assert len({learning.adapter_sha256(u) for u, _ in updates}) == 3  # own assignments
        adapter = learning.aggregate(updates)
        losses.append(learning.eval_loss(probe, adapter))
    assert losses[-1] < losses[0] - 0.5, losses
    assert all(b < a for a, b in itertools.pairwise(losses)), losses
