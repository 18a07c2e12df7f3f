"""Training and verification on a CUDA device, where one is present: the same bound run twice
gives the same bytes, and the validator's sampled check accepts it on the same device type.
On CPU-only machines (CI) these cases are skipped, saying why; the figures of the device
runs are in docs/mining.md and docs/validation.md."""

from __future__ import annotations

import hashlib

import pytest
import torch

from r3mes_desktop.adapters.mining import trace
from r3mes_desktop.adapters.mining.commitments import TraceDir, build_openings, read_package
from r3mes_desktop.adapters.mining.presets import make_plan
from r3mes_desktop.core import workproof
from r3mes_desktop.core.workproof import Reason

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device on this machine (CPU-only run)"
)
MINER = "0x" + "44" * 20


def test_a_bound_run_on_cuda_is_deterministic_and_verifies(tmp_path) -> None:
    digest = workproof.assignment(11, MINER, 2)
    plan = make_plan(round_id=2, seed=workproof.training_seed(digest), base_model_id="cuda-lm",
                     steps=12, hyperparams={"preset": "tiny"})  # fmt: skip
    first = trace.train_bound(
        plan, miner=MINER, assignment=digest, trace=TraceDir(tmp_path / "a"), device="cuda"
    )
    again = trace.train_bound(
        plan, miner=MINER, assignment=digest, trace=TraceDir(tmp_path / "b"), device="cuda"
    )
    assert hashlib.sha256(first).digest() == hashlib.sha256(again).digest()
    _, manifest = read_package(first)
    assert manifest is not None and manifest.device_type == "cuda"
    block = hashlib.sha256(b"cuda block").digest()
    openings = build_openings(TraceDir(tmp_path / "a"), manifest,
                              workproof.picks(block, 2, MINER, manifest.segments))  # fmt: skip
    finding = trace.verify(first, openings, plan=plan, miner=MINER, assignment=digest,
                           block_hash=block, device="cuda")  # fmt: skip
    assert finding.reason is Reason.ACCEPTED, finding.detail
    with pytest.raises(trace.CannotVerifyHere):  # a CPU validator leaves it to a GPU one
        trace.verify(first, openings, plan=plan, miner=MINER, assignment=digest,
                     block_hash=block, device="cpu")  # fmt: skip
