"""Real text as a dataset: byte tokens, held-out tail, named by sha256, trained and verified."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest

from r3mes_desktop.adapters.mining import learning, trace, training
from r3mes_desktop.adapters.mining.commitments import TraceDir, build_openings, read_package
from r3mes_desktop.adapters.mining.corpus import TextCorpus, build_dataset
from r3mes_desktop.adapters.mining.presets import make_plan
from r3mes_desktop.core import workproof
from r3mes_desktop.core.errors import ValidationError
from r3mes_desktop.core.workproof import Reason

TEXT = (Path(__file__).parents[4] / "docs" / "validation.md").read_bytes()
DATASET = build_dataset(TEXT, name="validation.md")
SHA = hashlib.sha256(DATASET).hexdigest()
MINER = "0x" + "33" * 20


def _plan(steps: int = 12):
    digest = workproof.assignment(77, MINER, 4)
    hyper = {"preset": "tiny", "vocab_size": 256, "dataset_cid": "bafy-test", "dataset_sha256": SHA}
    plan = make_plan(round_id=4, seed=workproof.training_seed(digest), base_model_id="text-lm",
                     steps=steps, hyperparams=hyper)  # fmt: skip
    return digest, plan


def test_training_windows_never_touch_the_held_out_tail() -> None:
    corpus = TextCorpus(DATASET)
    assert corpus.vocab_size == 256 and corpus.split == int(len(TEXT) * 0.9)
    train = np.concatenate([corpus.batch(s, 8, 16, stream=5) for s in range(50)])
    held = corpus.batch(0, 8, 16, stream=learning.EVAL_STREAM)
    text = bytes(corpus.tokens.astype(np.uint8))
    for row in train:
        start = text.find(bytes(row.astype(np.uint8)))
        assert start + len(row) <= corpus.split
    assert all(text.find(bytes(r.astype(np.uint8)), 0) >= 0 for r in held)
    with pytest.raises(ValueError, match="at least 1024"):
        build_dataset(b"short", name="x")


def test_a_round_on_a_dataset_needs_its_exact_bytes_and_byte_vocabulary() -> None:
    _, plan = _plan()
    assert plan.dataset_sha256 == SHA and plan.model.vocab_size == 256
    with pytest.raises(ValidationError, match="none was given"):
        training.RoundTraining(plan, device=training.resolve_device("cpu"))
    with pytest.raises(ValidationError, match="sha256"):
        training.RoundTraining(plan, device=training.resolve_device("cpu"), dataset=DATASET + b" ")
    with pytest.raises(ValidationError, match="vocab_size must be 256"):
        hyper = {"preset": "tiny", "dataset_cid": "b", "dataset_sha256": SHA}
        make_plan(round_id=1, seed=1, base_model_id="m", steps=1, hyperparams=hyper)


def test_bound_training_on_text_is_verified_and_lowers_held_out_loss(tmp_path) -> None:
    digest, plan = _plan()
    genesis = learning.genesis_adapter(plan)
    before = learning.eval_loss(plan, genesis, dataset=DATASET)
    run = training.RoundTraining(plan, device=training.resolve_device("cpu"), dataset=DATASET)
    while run.step < plan.steps:
        run.train_step()
    after = learning.eval_loss(plan, learning.update_tensors(run.output().data), dataset=DATASET)
    assert after < before - 0.5, (before, after)

    package = trace.train_bound(
        plan, miner=MINER, assignment=digest, trace=TraceDir(tmp_path), dataset=DATASET
    )
    block = hashlib.sha256(b"b").digest()
    _, manifest = read_package(package)
    assert manifest is not None
    openings = build_openings(TraceDir(tmp_path), manifest,
                              workproof.picks(block, 4, MINER, manifest.segments))  # fmt: skip
    finding = trace.verify(package, openings, plan=plan, miner=MINER, assignment=digest,
                           block_hash=block, dataset=DATASET)  # fmt: skip
    assert finding.reason is Reason.ACCEPTED, finding.detail
    other = dataclasses.replace(plan, dataset_sha256=hashlib.sha256(b"x").hexdigest())
    foreign = trace.verify(package, openings, plan=other, miner=MINER, assignment=digest,
                           block_hash=block, dataset=DATASET)  # fmt: skip
    assert foreign.reason is Reason.NOT_BOUND  # trained on another dataset than the round's
