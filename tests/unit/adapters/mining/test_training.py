"""The round's training: learning, determinism, exact resume, OOM handling, size limits."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import torch
from safetensors.numpy import load as st_load

from r3mes_desktop.adapters.mining.data import SyntheticLanguage
from r3mes_desktop.adapters.mining.model import BitLinear, quantize_activations
from r3mes_desktop.adapters.mining.presets import make_plan
from r3mes_desktop.adapters.mining.settings import MiningConfig
from r3mes_desktop.adapters.mining.training import (
    RoundTraining,
    configure_determinism,
    resolve_device,
    train_round,
)
from r3mes_desktop.adapters.mining.worker import plan_for
from r3mes_desktop.core.errors import ResourceError, ValidationError
from r3mes_desktop.core.steps import RoundSpec


def tiny_plan(steps: int = 30, seed: int = 5, **hyper: object):
    return make_plan(
        round_id=7,
        seed=seed,
        base_model_id="r3mes/bitnet-tiny",
        steps=steps,
        hyperparams={"preset": "tiny", **hyper},
    )


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    configure_determinism(1)


def test_loss_really_goes_down() -> None:
    losses: list[float] = []
    plan = tiny_plan(steps=60)
    train_round(plan, num_threads=1, on_step=lambda run, _t: losses.append(run.last_loss))
    start = float(np.mean(losses[:5]))
    end = float(np.mean(losses[-5:]))
    assert start > math.log(plan.model.vocab_size) - 0.5  # starts near chance
    assert end < start - 1.0  # learns the language's structure
    assert all(math.isfinite(x) for x in losses)


def test_same_round_twice_gives_identical_bytes_and_hash() -> None:
    a = train_round(tiny_plan(), num_threads=1)
    b = train_round(tiny_plan(), num_threads=1)
    assert a.data == b.data
    assert a.gradient_hash == b.gradient_hash == hashlib.sha256(a.data).digest()
    other = train_round(tiny_plan(seed=6), num_threads=1)
    assert other.gradient_hash != a.gradient_hash


def test_update_is_sorted_safetensors_of_lora_adapters_only() -> None:
    out = train_round(tiny_plan(steps=3), num_threads=1)
    header_len = int.from_bytes(out.data[:8], "little")
    header = out.data[8 : 8 + header_len].decode()
    assert "__metadata__" not in header
    tensors = st_load(out.data)
    names = list(tensors)
    assert names and all(".lora_" in n for n in names)
    assert header.index(sorted(names)[0]) < header.index(sorted(names)[-1])
    assert any(np.abs(t).sum() > 0 for k, t in tensors.items() if k.endswith("lora_B"))


def test_backbone_is_ternary_frozen_and_deterministic() -> None:
    gen = torch.Generator().manual_seed(1)
    layer = BitLinear(32, 16, gen)
    assert set(layer.ternary.unique().tolist()) <= {-1, 0, 1}
    assert torch.equal(layer.weight, layer.ternary.float() * layer.scale)
    again = BitLinear(32, 16, torch.Generator().manual_seed(1))
    assert torch.equal(layer.weight, again.weight)
    run = RoundTraining(tiny_plan(), device=torch.device("cpu"))
    trainable = [n for n, p in run.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert not list(layer.parameters())  # the backbone holds buffers only


def test_activation_quantization_is_8bit_with_straight_through_gradient() -> None:
    x = torch.randn(4, 32, requires_grad=True)
    q = quantize_activations(x)
    scale = 127.0 / x.detach().abs().amax(-1, keepdim=True)
    levels = (q.detach() * scale).round()
    assert torch.allclose(q.detach() * scale, levels, atol=1e-3)
    assert levels.abs().max() <= 128
    q.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))


def test_data_stream_is_a_function_of_seed_and_step() -> None:
    lang = SyntheticLanguage(3, 64)
    assert np.array_equal(lang.batch(5, 4, 16), SyntheticLanguage(3, 64).batch(5, 4, 16))
    assert not np.array_equal(lang.batch(5, 4, 16), lang.batch(6, 4, 16))
    assert lang.entropy_nats < math.log(64) / 2  # structure to learn


def test_resume_in_same_process_is_bit_identical() -> None:
    plan = tiny_plan()
    reference = train_round(plan, num_threads=1)
    first = RoundTraining(plan, device=torch.device("cpu"))
    for _ in range(11):
        first.train_step()
    arrays, state = first.checkpoint_state()
    for _ in range(5):  # diverge afterwards, as a crashed run would have
        first.train_step()
    resumed = RoundTraining(plan, device=torch.device("cpu"))
    resumed.restore(arrays, state)
    assert resumed.step == 11
    while resumed.step < plan.steps:
        resumed.train_step()
    assert resumed.output().data == reference.data


def test_oom_retries_with_smaller_micro_batch_keeping_effective_batch() -> None:
    plan = tiny_plan(steps=4)
    injected: list[tuple[int, int]] = []

    def hook(step: int, micro: int) -> None:
        if step == 1 and micro == 8 and not injected:
            injected.append((step, micro))
            raise MemoryError("injected")

    run = RoundTraining(plan, device=torch.device("cpu"), micro_hook=hook)
    for _ in range(plan.steps):
        run.train_step()
    assert injected == [(1, 8)]
    assert run.micro_batch == 4 and run.oom_retries == 1
    assert run.tokens == plan.steps * plan.model.batch_size * plan.model.seq_len


def test_forced_small_memory_budget_shrinks_micro_batch() -> None:
    plan = tiny_plan(steps=2)
    probe = RoundTraining(plan, device=torch.device("cpu"))
    budget_mb = (probe.estimated_bytes(2) + 1) / 2**20
    run = RoundTraining(plan, device=torch.device("cpu"), memory_budget_mb=budget_mb)
    run.train_step()
    assert run.micro_batch == 2
    assert run.oom_retries == 2  # 8 → 4 → 2


def test_oom_even_at_micro_batch_one_is_a_resource_error() -> None:
    run = RoundTraining(tiny_plan(), device=torch.device("cpu"), memory_budget_mb=1e-6)
    with pytest.raises(ResourceError, match=r"out of memory .* micro-batch 1"):
        run.train_step()


def test_gradient_size_limit_and_bad_settings_are_clear_errors() -> None:
    spec = RoundSpec(
        round_id=1,
        seed=1,
        difficulty=20,
        base_model_id="m",
        steps=5,
        hyperparams={"preset": "large"},
    )
    with pytest.raises(ValidationError, match="max_gradient_size_mb"):
        plan_for(spec, MiningConfig(max_gradient_size_mb=0.01))
    with pytest.raises(ValidationError, match=r"lora_rank must be an integer in 1\.\.1024"):
        tiny_plan(lora_rank=0)
    with pytest.raises(ValidationError, match="unknown hyperparameter"):
        tiny_plan(dropout=0.1)
    with pytest.raises(ValidationError, match="device must be"):
        resolve_device("gpu")
    with pytest.raises(ValidationError, match="device must be"):
        MiningConfig(device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ResourceError, match="CUDA is not available"):
            resolve_device("cuda:0")
