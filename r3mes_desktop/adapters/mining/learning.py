"""How the network model learns from accepted updates: aggregation and evaluation.

Aggregation is federated averaging of the LoRA adapters, weighted by the tokens each update
trained on. It is deterministic to the byte: updates are taken in the order of their
sha256 (not of arrival), summed in float64 and rounded once to float32, and the result is
serialized with sorted keys, so anyone holding the same accepted updates reproduces the
same version bytes, hash and CID.

Evaluation is the mean cross-entropy of the network model on held-out batches: a stream of
the network's language that no assignment draws (`EVAL_STREAM`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from r3mes_desktop.adapters.mining import training
from r3mes_desktop.adapters.mining.presets import TrainPlan
from r3mes_desktop.core import workproof

EVAL_STREAM = 2**63 + 12345  # out of the range of `training._derive` (< 2**63)
Adapter = dict[str, np.ndarray]


def adapter_bytes(adapter: Adapter) -> bytes:
    return bytes(st_save({k: np.ascontiguousarray(adapter[k]) for k in sorted(adapter)}))


def adapter_sha256(adapter: Adapter) -> str:
    return hashlib.sha256(adapter_bytes(adapter)).hexdigest()


def update_tensors(package: bytes) -> Adapter:
    """The adapter tensors of an update package (its manifest dropped)."""
    arrays = dict(st_load(package))
    arrays.pop(workproof.MANIFEST_KEY, None)
    return arrays


def aggregate(updates: Sequence[tuple[Adapter, int]]) -> Adapter:
    """Token-weighted mean of the adapters; order-independent and byte-reproducible."""
    if not updates:
        raise ValueError("updates: expected at least one accepted update")
    keyed = sorted(updates, key=lambda u: adapter_sha256(u[0]))
    names = sorted(keyed[0][0])
    if any(sorted(u) != names for u, _ in keyed):
        raise ValueError("updates: adapters with different tensors cannot be averaged")
    total = sum(tokens for _, tokens in keyed)
    if total <= 0:
        raise ValueError("updates: token counts must be positive")
    out: Adapter = {}
    for name in names:
        acc = np.zeros(keyed[0][0][name].shape, dtype=np.float64)
        for adapter, tokens in keyed:
            acc += adapter[name].astype(np.float64) * (tokens / total)
        out[name] = acc.astype(np.float32)
    return out


def genesis_adapter(plan: TrainPlan) -> Adapter:
    """The adapters every miner starts from before the first version (network-seeded)."""
    run = training.RoundTraining(_genesis(plan, dataset=False), device=torch.device("cpu"))
    return {k: v.detach().cpu().numpy().copy() for k, v in run.params.items()}


def _genesis(plan: TrainPlan, *, dataset: bool = True) -> TrainPlan:
    """`plan` starting from the given adapters (no adapter hash), on its dataset or not."""
    return TrainPlan(
        round_id=plan.round_id,
        seed=plan.seed,
        base_model_id=plan.base_model_id,
        steps=plan.steps,
        preset_name=plan.preset_name,
        model=plan.model,
        dataset_sha256=plan.dataset_sha256 if dataset else "",
    )


@torch.no_grad()
def eval_loss(
    plan: TrainPlan,
    adapter: Adapter,
    *,
    batches: int = 8,
    device: str = "cpu",
    dataset: bytes | None = None,
) -> float:
    """Mean held-out cross-entropy (nats/token) of the base model with `adapter` (on the
    dataset's held-out tail when the plan names one)."""
    run = training.RoundTraining(
        _genesis(plan), device=training.resolve_device(device), adapter=adapter, dataset=dataset
    )
    m = plan.model
    total = 0.0
    for i in range(batches):
        tokens = run.language.batch(i, m.batch_size, m.seq_len, EVAL_STREAM)
        batch = torch.from_numpy(tokens).to(run.device)
        logits = run.model(batch[:, :-1])
        total += float(
            F.cross_entropy(logits.reshape(-1, m.vocab_size), batch[:, 1:].reshape(-1)).item()
        )
    return total / batches


def aggregate_job(job: dict[str, Any]) -> dict[str, Any]:
    """Aggregate accepted update packages and evaluate the result (a worker's target):
    {"packages": [bytes], "plan": plan json} -> {"adapter": bytes, "sha256", "eval_loss",
    "updates", "tokens"}. Each update is weighted by the tokens its manifest claims."""
    from r3mes_desktop.adapters.mining.commitments import read_package

    plan = TrainPlan.from_json(job["plan"])
    per_step = plan.model.batch_size * plan.model.seq_len
    updates: list[tuple[Adapter, int]] = []
    for package in job["packages"]:
        tensors, manifest = read_package(package)
        steps = manifest.steps if manifest is not None else plan.steps
        updates.append((tensors, steps * per_step))
    adapter = aggregate(updates)
    data = adapter_bytes(adapter)
    return {
        "adapter": data,
        "sha256": hashlib.sha256(data).hexdigest(),
        "eval_loss": eval_loss(
            plan, adapter, device=job.get("device", "cpu"), dataset=job.get("dataset") or None
        ),
        "updates": len(updates),
        "tokens": sum(t for _, t in updates),
    }
