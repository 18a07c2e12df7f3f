"""Model presets and the per-round training plan (torch-free: the GUI process imports it).

A round's plan is a preset (chosen by the round's hyperparams or the miner's settings)
with the round's overrides applied and validated. Everything that changes the resulting
bytes is in the plan, so two miners with the same plan produce the same gradient.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from r3mes_desktop.core.errors import ValidationError


@dataclass(frozen=True)
class ModelPreset:
    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    d_ff: int
    seq_len: int
    batch_size: int  # effective batch (sequences per optimizer step)
    micro_batch: int  # sequences per forward pass; halved on out-of-memory
    lora_rank: int
    lora_alpha: float
    lr: float


PRESETS: dict[str, ModelPreset] = {
    # Unit tests: a whole round in well under a second on one core.
    "tiny": ModelPreset(64, 32, 1, 2, 64, 16, 8, 8, 4, 8.0, 3e-2),
    # Desktop default: a 40-step round takes a few seconds on 2 CPU cores.
    "default": ModelPreset(128, 128, 2, 4, 256, 64, 16, 16, 8, 16.0, 1e-2),
    # The reference size (about 6,000 tokens/s on 2 cores); meant for GPUs.
    "large": ModelPreset(256, 256, 4, 4, 1024, 128, 32, 16, 16, 32.0, 5e-3),
}

_INT_FIELDS = {
    "vocab_size": (8, 65536),
    "d_model": (8, 8192),
    "n_layers": (1, 64),
    "n_heads": (1, 128),
    "d_ff": (8, 32768),
    "seq_len": (4, 8192),
    "batch_size": (1, 4096),
    "micro_batch": (1, 4096),
    "lora_rank": (1, 1024),
}
_FLOAT_FIELDS = {"lora_alpha": (1e-6, 1e6), "lr": (1e-8, 10.0)}


@dataclass(frozen=True)
class TrainPlan:
    """Everything that determines a round's bytes."""

    round_id: int
    seed: int
    base_model_id: str
    steps: int
    preset_name: str
    model: ModelPreset
    adapter_sha256: str = ""  # the network adapter training starts from; "": the genesis one
    dataset_sha256: str = ""  # the text corpus it trains on; "": the synthetic language

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TrainPlan:
        model = ModelPreset(**data["model"])
        return cls(
            round_id=int(data["round_id"]),
            seed=int(data["seed"]),
            base_model_id=str(data["base_model_id"]),
            steps=int(data["steps"]),
            preset_name=str(data["preset_name"]),
            model=model,
            adapter_sha256=str(data.get("adapter_sha256", "")),
            dataset_sha256=str(data.get("dataset_sha256", "")),
        )

    def fingerprint(self) -> str:
        """Stable id of the plan; a checkpoint of another plan is never resumed."""
        text = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def update_size_bytes(self) -> int:
        """Float32 bytes of the LoRA update (A and B of every adapted projection)."""
        m = self.model
        per_layer = 4 * (m.d_model + m.d_model) + (m.d_model + m.d_ff) + (m.d_ff + m.d_model)
        return 4 * m.lora_rank * per_layer * m.n_layers


def _checked_int(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValidationError(f"{name} must be an integer in {lo}..{hi}, got {value!r}")
    return value


def _checked_float(name: str, value: Any, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise ValidationError(f"{name} must be a number in {lo:g}..{hi:g}, got {value!r}")
    return float(value)


def make_plan(
    *,
    round_id: int,
    seed: int,
    base_model_id: str,
    steps: int,
    hyperparams: Mapping[str, Any] | None = None,
    default_preset: str = "default",
    adapter_sha256: str = "",
) -> TrainPlan:
    """Resolve a round into a validated plan; bad input names the field and its range."""
    params = dict(hyperparams or {})
    preset_name = params.pop("preset", default_preset)
    dataset = dataset_of(params)
    params.pop("dataset_cid", None)
    params.pop("dataset_sha256", None)
    if preset_name not in PRESETS:
        raise ValidationError(f"preset must be one of {sorted(PRESETS)}, got {preset_name!r}")
    fields = dataclasses.asdict(PRESETS[preset_name])
    for key, value in params.items():
        if key in _INT_FIELDS:
            fields[key] = _checked_int(key, value, *_INT_FIELDS[key])
        elif key in _FLOAT_FIELDS:
            fields[key] = _checked_float(key, value, *_FLOAT_FIELDS[key])
        else:
            accepted = sorted([*_INT_FIELDS, *_FLOAT_FIELDS, "preset"])
            raise ValidationError(f"unknown hyperparameter {key!r}; accepted: {accepted}")
    model = ModelPreset(**fields)
    if model.d_model % model.n_heads:
        raise ValidationError(
            f"d_model ({model.d_model}) must be a multiple of n_heads ({model.n_heads})"
        )
    if dataset is not None and model.vocab_size != DATASET_VOCAB:
        raise ValidationError(
            f"vocab_size must be {DATASET_VOCAB} for a text dataset (byte tokens), "
            f"got {model.vocab_size}"
        )
    if model.batch_size % model.micro_batch:
        raise ValidationError(
            f"batch_size ({model.batch_size}) must be a multiple of micro_batch "
            f"({model.micro_batch})"
        )
    return TrainPlan(
        round_id=_checked_int("round_id", round_id, 0, 2**64 - 1),
        seed=_checked_int("seed", seed, 0, 2**64 - 1),
        base_model_id=str(base_model_id),
        steps=_checked_int("steps", steps, 1, 1_000_000),
        preset_name=preset_name,
        model=model,
        adapter_sha256=adapter_sha256,
        dataset_sha256="" if dataset is None else dataset[1],
    )


DATASET_VOCAB = 256
_HEX64 = frozenset("0123456789abcdef")


def dataset_of(hyperparams: Mapping[str, Any]) -> tuple[str, str] | None:
    """(CID, sha256) of the text dataset a round's hyperparams name, or None (synthetic)."""
    cid = hyperparams.get("dataset_cid")
    sha = hyperparams.get("dataset_sha256")
    if cid is None and sha is None:
        return None
    if not isinstance(cid, str) or not cid or len(cid) > 128:
        raise ValidationError(f"dataset_cid must be a CID string, got {cid!r}")
    if not isinstance(sha, str) or len(sha) != 64 or not set(sha) <= _HEX64:
        raise ValidationError(f"dataset_sha256 must be 64 lowercase hex digits, got {sha!r}")
    return cid, sha
