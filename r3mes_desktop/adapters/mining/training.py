"""The deterministic training loop of one round (imports torch: worker process only).

Determinism: `torch.use_deterministic_algorithms(True)`, `CUBLAS_WORKSPACE_CONFIG` set
before torch can start CUDA, a fixed thread count, seeds derived from the round, and data
that is a pure function of (seed, step). So the same plan gives the same update bytes, and a
resumed run (adapters + optimizer + RNG states + step + micro-batch restored from a
checkpoint) gives the bit-identical bytes of an uninterrupted one.
"""

from __future__ import annotations

import os

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
# Idle OpenMP threads sleep instead of spinning: on a desktop shared with the GUI (and
# here with other processes) spinning threads cost 2-3x throughput when cores are busy.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import gc
import hashlib
import random
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import save as st_save

from r3mes_desktop.adapters.mining.corpus import TextCorpus
from r3mes_desktop.adapters.mining.data import SyntheticLanguage
from r3mes_desktop.adapters.mining.model import TinyLM
from r3mes_desktop.adapters.mining.presets import TrainPlan
from r3mes_desktop.adapters.mining.settings import vram_fraction
from r3mes_desktop.core.errors import ResourceError, ValidationError

TORCH_VERSION = str(torch.__version__)
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
_OOM = (MemoryError, torch.OutOfMemoryError)


class OverBudget(MemoryError):
    """A micro-batch whose estimated memory is over `memory_budget_mb`: handled like an
    out-of-memory error (a smaller micro-batch, the same effective batch)."""


MicroHook = Callable[[int, int], None]
"""Called as (step, micro_batch) before each forward pass: heartbeats; tests inject OOM."""


def resolve_device(setting: str) -> torch.device:
    """'auto' → cuda when present else cpu; 'cpu'; 'cuda' or 'cuda:N'."""
    if not _DEVICE_RE.match(setting):
        raise ValidationError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {setting!r}")
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(setting)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ResourceError(f"device {setting!r} requested but CUDA is not available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValidationError(
                f"device index must be in 0..{torch.cuda.device_count() - 1}, got {setting!r}"
            )
    return device


def apply_vram_cap(device: torch.device, cap_mb: float) -> float | None:
    """Cap this process's CUDA allocations on `device` at `cap_mb` (settings
    `gpu_vram_cap_mb`): torch's caching allocator then raises out-of-memory past it, which
    the training loop answers with a smaller micro-batch. Returns the fraction set; None on
    the CPU (no effect, no error) or with no cap."""
    if device.type != "cuda" or cap_mb <= 0:
        return None
    total = int(torch.cuda.get_device_properties(device).total_memory)
    fraction = vram_fraction(cap_mb, total)
    torch.cuda.set_per_process_memory_fraction(fraction, device)
    return fraction


def configure_determinism(num_threads: int) -> None:
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.set_num_threads(num_threads if num_threads > 0 else default_threads())


def torch_threads() -> int:
    """The intra-op thread count torch is using now (reported with each result)."""
    return int(torch.get_num_threads())


def default_threads() -> int:
    """All cores but one (kept for the GUI and the event loop), at least one."""
    return max(1, (os.cpu_count() or 2) - 1)


def _derive(seed: int, label: str) -> int:
    digest = hashlib.sha256(f"{seed}:{label}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def _corpus(dataset: bytes | None, sha256: str) -> TextCorpus:
    """The round's text dataset, refused unless its bytes are the sha256 the plan names."""
    if dataset is None:
        raise ValidationError(f"dataset: the plan names dataset {sha256[:12]} but none was given")
    digest = hashlib.sha256(dataset).hexdigest()
    if digest != sha256:
        raise ValidationError(f"dataset: sha256 {digest[:12]} is not the plan's {sha256[:12]}")
    return TextCorpus(dataset)


def network_seed_of(base_model_id: str) -> int:
    """The seed of the network's language and genesis adapters (shared by every miner)."""
    digest = hashlib.sha256(b"r3mes-network:" + base_model_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def load_adapter(
    params: dict[str, torch.nn.Parameter], adapter: dict[str, np.ndarray] | None, sha256: str
) -> None:
    """Copy a network adapter into the model's LoRA parameters; refuse one whose bytes are
    not the sha256 the plan names, or whose tensors do not fit (never trained on)."""
    if adapter is None:
        raise ValidationError(f"adapter: the plan names adapter {sha256[:12]} but none was given")
    digest = hashlib.sha256(st_save({k: adapter[k] for k in sorted(adapter)})).hexdigest()
    if sha256 and digest != sha256:
        raise ValidationError(f"adapter: sha256 {digest[:12]} is not the plan's {sha256[:12]}")
    if set(adapter) != set(params):
        raise ValidationError("adapter: its tensors are not this model's LoRA adapters")
    with torch.no_grad():
        for name, param in params.items():
            value = torch.from_numpy(np.ascontiguousarray(adapter[name]))
            if tuple(value.shape) != tuple(param.shape):
                raise ValidationError(f"adapter: {name} has shape {tuple(value.shape)}")
            param.copy_(value)


@dataclass(frozen=True)
class RoundOutput:
    data: bytes
    gradient_hash: bytes
    tokens: int
    final_loss: float
    micro_batch: int
    oom_retries: int


def serialize_update(tensors: dict[str, torch.Tensor]) -> bytes:
    """safetensors bytes, keys sorted, no metadata: identical training → identical bytes."""
    arrays = {k: tensors[k].detach().to("cpu").contiguous().numpy() for k in sorted(tensors)}
    return st_save(arrays)


class RoundTraining:
    """One round's model, optimizer and position; stepped by the worker."""

    def __init__(
        self,
        plan: TrainPlan,
        *,
        device: torch.device,
        memory_budget_mb: float = 0.0,
        micro_hook: MicroHook | None = None,
        adapter: dict[str, np.ndarray] | None = None,
        dataset: bytes | None = None,
    ) -> None:
        """The language and the starting adapters belong to the network (the base model
        id names both; `adapter`, whose sha256 the plan names, replaces the genesis
        adapters); the batches and every RNG come from the plan's seed, the miner's
        assignment. So miners of one round train the same model on different text."""
        self.plan = plan
        self.device = device
        self.memory_budget_mb = memory_budget_mb
        self.memory_budget_bytes = int(memory_budget_mb * 2**20)
        self.micro_hook = micro_hook
        torch.manual_seed(_derive(plan.seed, "torch"))
        np.random.seed(_derive(plan.seed, "numpy") % 2**32)
        random.seed(_derive(plan.seed, "python"))
        network_seed = network_seed_of(plan.base_model_id)
        self.language: SyntheticLanguage | TextCorpus = (
            SyntheticLanguage(network_seed, plan.model.vocab_size)
            if not plan.dataset_sha256
            else _corpus(dataset, plan.dataset_sha256)
        )
        self.stream = _derive(plan.seed, "batches")
        model = TinyLM(
            plan.model, base_model_id=plan.base_model_id, lora_seed=_derive(network_seed, "lora")
        )
        self.model = model.to(device)
        self.params = self.model.lora_parameters()
        if adapter is not None or plan.adapter_sha256:
            load_adapter(self.params, adapter, plan.adapter_sha256)
        self.optimizer = torch.optim.AdamW(
            list(self.params.values()), lr=plan.model.lr, weight_decay=0.0, foreach=False
        )
        self.step = 0
        self.tokens = 0
        self.last_loss = float("nan")
        self.micro_batch = plan.model.micro_batch
        self.oom_retries = 0
        # Each out-of-memory retry as (step, micro-batch after it): the chunking changes a
        # step's float sums, so a validator recomputing the step must chunk it the same
        # way; the bound package's manifest lists them and `replay_shrinks` applies them.
        self.shrinks: list[tuple[int, int]] = []
        self.replay: dict[int, list[int]] = {}

    # -- memory -------------------------------------------------------------------------
    def estimated_bytes(self, micro_batch: int) -> int:
        """Rough activation memory of one micro-batch (used for the configured budget)."""
        m = self.plan.model
        t = m.seq_len
        per_layer = t * (10 * m.d_model + 3 * m.d_ff) + 3 * m.n_heads * t * t
        return 4 * micro_batch * (m.n_layers * per_layer + 3 * t * m.vocab_size)

    def _free_memory(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # -- stepping -----------------------------------------------------------------------
    def _accumulate(self, batch: torch.Tensor, micro: int) -> float:
        total = 0.0
        size = batch.shape[0]
        vocab = self.plan.model.vocab_size
        for start in range(0, size, micro):
            if self.micro_hook is not None:
                self.micro_hook(self.step, micro)
            if self.memory_budget_bytes and self.estimated_bytes(micro) > self.memory_budget_bytes:
                raise OverBudget(
                    f"micro-batch {micro} needs ~{self.estimated_bytes(micro) / 2**20:.3g} MB, "
                    f"over memory_budget_mb = {self.memory_budget_mb:.3g} MB"
                )
            chunk = batch[start : start + micro]
            logits = self.model(chunk[:, :-1])
            loss = F.cross_entropy(logits.reshape(-1, vocab), chunk[:, 1:].reshape(-1))
            torch.autograd.backward(loss * (chunk.shape[0] / size))
            total += loss.item() * chunk.shape[0] / size
        return total

    def replay_shrinks(self, shrinks: Iterable[tuple[int, int]]) -> None:
        """Recompute with another run's micro-batch changes: at each listed step, shrink
        as that run did before computing the step (a validator, not out of memory)."""
        self.replay = {}
        for step, micro in shrinks:
            self.replay.setdefault(step, []).append(micro)

    def _shrink(self, micro: int) -> None:
        self.micro_batch = micro
        self.oom_retries += 1
        self.shrinks.append((self.step, micro))

    def train_step(self) -> float:
        """One optimizer step on the step's batch; OOM → smaller micro-batch, same batch."""
        m = self.plan.model
        for micro in self.replay.get(self.step, ()):
            self._shrink(micro)
        tokens = self.language.batch(self.step, m.batch_size, m.seq_len, self.stream)
        batch = torch.from_numpy(tokens).to(self.device)
        while True:
            try:
                loss = self._accumulate(batch, self.micro_batch)
                break
            except _OOM as exc:
                self._free_memory()
                if self.micro_batch == 1 and isinstance(exc, OverBudget):
                    raise ResourceError(
                        f"out of memory at step {self.step} even with micro-batch 1: {exc} "
                        "(the setting memory_budget_mb, R3MES_MEMORY_BUDGET_MB: raise it, or "
                        "0 for no budget)"
                    ) from exc
                if self.micro_batch == 1:
                    raise ResourceError(
                        f"out of memory at step {self.step} even with micro-batch 1 "
                        f"({type(exc).__name__}: {exc})"
                    ) from exc
                smaller = self.micro_batch // 2
                while m.batch_size % smaller:
                    smaller -= 1
                self._shrink(smaller)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.tokens += m.batch_size * m.seq_len
        self.last_loss = loss
        return loss

    def output(self) -> RoundOutput:
        data = serialize_update(dict(self.params))
        return RoundOutput(
            data=data,
            gradient_hash=hashlib.sha256(data).digest(),
            tokens=self.tokens,
            final_loss=self.last_loss,
            micro_batch=self.micro_batch,
            oom_retries=self.oom_retries,
        )

    # -- checkpoint state ---------------------------------------------------------------
    def checkpoint_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Arrays for safetensors and a JSON-able dict; together they resume exactly."""
        arrays: dict[str, np.ndarray] = {
            f"lora/{k}": v.detach().cpu().numpy().copy() for k, v in self.params.items()
        }
        names = {id(p): k for k, p in self.params.items()}
        opt_scalars: dict[str, dict[str, Any]] = {}
        for param, slots in self.optimizer.state.items():
            name = names[id(param)]
            for slot, value in slots.items():
                if isinstance(value, torch.Tensor):
                    arrays[f"optim/{name}/{slot}"] = value.detach().cpu().numpy().copy()
                else:
                    opt_scalars.setdefault(name, {})[slot] = value
        arrays["rng/torch"] = torch.get_rng_state().numpy().copy()
        if self.device.type == "cuda":
            arrays["rng/cuda"] = torch.cuda.get_rng_state(self.device).numpy().copy()
        np_state = cast(tuple[Any, ...], np.random.get_state(legacy=True))
        arrays["rng/numpy_keys"] = np.asarray(np_state[1], dtype=np.uint32)
        py_version, py_internal, py_gauss = random.getstate()
        state = {
            "fingerprint": self.plan.fingerprint(),
            "step": self.step,
            "tokens": self.tokens,
            "last_loss": self.last_loss,
            "micro_batch": self.micro_batch,
            "oom_retries": self.oom_retries,
            "data_cursor": self.step,
            "optim_scalars": opt_scalars,
            "rng_numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
            "rng_python": [py_version, list(py_internal), py_gauss],
        }
        if self.shrinks:  # absent when none: the states of most runs stay as they were
            state["shrinks"] = [list(shrink) for shrink in self.shrinks]
        return arrays, state

    def restore(self, arrays: dict[str, np.ndarray], state: dict[str, Any]) -> None:
        with torch.no_grad():
            for k, p in self.params.items():
                p.copy_(torch.from_numpy(arrays[f"lora/{k}"]))
        for k, p in self.params.items():
            slots: dict[str, Any] = dict(state["optim_scalars"].get(k, {}))
            prefix = f"optim/{k}/"
            for key, value in arrays.items():
                if key.startswith(prefix):
                    tensor = torch.from_numpy(value.copy())
                    slot = key[len(prefix) :]
                    slots[slot] = tensor if slot == "step" else tensor.to(self.device)
            if slots:
                self.optimizer.state[p] = slots
        torch.set_rng_state(torch.from_numpy(arrays["rng/torch"].copy()))
        if "rng/cuda" in arrays and self.device.type == "cuda":
            torch.cuda.set_rng_state(torch.from_numpy(arrays["rng/cuda"].copy()), self.device)
        kind, pos, has_gauss, gauss = state["rng_numpy"]
        np.random.set_state((kind, arrays["rng/numpy_keys"], pos, has_gauss, gauss))
        version, internal, gauss_next = state["rng_python"]
        random.setstate((version, tuple(internal), gauss_next))
        self.step = int(state["step"])
        self.tokens = int(state["tokens"])
        self.last_loss = float(state["last_loss"])
        self.micro_batch = int(state["micro_batch"])
        self.oom_retries = int(state["oom_retries"])
        self.shrinks = [(int(step), int(micro)) for step, micro in state.get("shrinks", [])]


def train_round(
    plan: TrainPlan,
    *,
    device: str = "cpu",
    num_threads: int = 0,
    memory_budget_mb: float = 0.0,
    on_step: Callable[[RoundTraining, float], None] | None = None,
) -> RoundOutput:
    """Train a whole round in this process (verification, benchmarks, tests)."""
    configure_determinism(num_threads)
    training = RoundTraining(plan, device=resolve_device(device), memory_budget_mb=memory_budget_mb)
    started = time.perf_counter()
    while training.step < plan.steps:
        training.train_step()
        if on_step is not None:
            on_step(training, time.perf_counter() - started)
    return training.output()
