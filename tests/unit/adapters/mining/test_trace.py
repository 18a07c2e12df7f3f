"""Bound runs and their sampled check: honest work passes, copies and skipped steps fail."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from r3mes_desktop.adapters.mining import trace
from r3mes_desktop.adapters.mining.commitments import (
    TraceDir,
    build_openings,
    build_package,
    find_trace,
    read_openings,
    read_package,
)
from r3mes_desktop.adapters.mining.presets import TrainPlan, make_plan
from r3mes_desktop.core import spotcheck, workproof
from r3mes_desktop.core.workproof import Manifest, Reason

A, B = "0x" + "11" * 20, "0x" + "22" * 20
SEED, ROUND, STEPS = 4242, 9, 16
BLOCK = hashlib.sha256(b"submission block").digest()


def bound(miner: str, steps: int = STEPS) -> tuple[bytes, TrainPlan]:
    digest = workproof.assignment(SEED, miner, ROUND)
    plan = make_plan(
        round_id=ROUND,
        seed=workproof.training_seed(digest),
        base_model_id="test-lm",
        steps=steps,
        hyperparams={"preset": "tiny"},
    )
    return digest, plan


def train(root: Path, miner: str, name: str, skipped: frozenset[int] = frozenset()) -> bytes:
    digest, plan = bound(miner)
    return trace.train_bound(
        plan, miner=miner, assignment=digest, trace=TraceDir(root / name), skipped_steps=skipped
    )


def check(root: Path, name: str, package: bytes, miner: str, *, block: bytes = BLOCK):
    digest, plan = bound(miner)
    _, manifest = read_package(package)
    assert manifest is not None
    picks = workproof.picks(block, ROUND, manifest.miner, manifest.segments)
    openings = build_openings(TraceDir(root / name), manifest, picks)
    return trace.verify(
        package, openings, plan=plan, miner=miner, assignment=digest, block_hash=block
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("traces")
    return root, {
        "a": train(root, A, "a"),
        "a_again": train(root, A, "a_again"),
        "b": train(root, B, "b"),
    }


def test_one_miner_is_deterministic_and_two_miners_differ(runs) -> None:
    _, packages = runs
    assert packages["a"] == packages["a_again"]
    assert hashlib.sha256(packages["a"]).digest() != hashlib.sha256(packages["b"]).digest()
    tensors_a, manifest = read_package(packages["a"])
    assert manifest is not None and manifest.miner == A and manifest.segments == STEPS
    assert manifest.assignment == workproof.assignment(SEED, A, ROUND).hex()
    assert set(tensors_a) and not any(k.startswith("meta/") for k in tensors_a)


def test_honest_work_is_accepted_by_recomputing_only_the_samples(runs) -> None:
    root, packages = runs
    finding = check(root, "a", packages["a"], A)
    assert finding.reason is Reason.ACCEPTED, finding.detail
    assert finding.steps_recomputed == workproof.samples_for_round(STEPS) < STEPS


def test_a_copied_update_is_not_bound_to_the_copier(runs) -> None:
    root, packages = runs
    finding = check(root, "a", packages["a"], B)
    assert finding.reason is Reason.NOT_BOUND and A in finding.detail


def test_a_relabelled_copy_fails_the_assigned_start(runs, tmp_path) -> None:
    """The copier rewrites the manifest to name itself (its assignment and plan) and keeps
    the other miner's committed states: the first leaf is not its assigned start."""
    root, packages = runs
    tensors, manifest = read_package(packages["a"])
    assert manifest is not None
    digest_b, plan_b = bound(B)
    forged = Manifest(
        **{
            **manifest.__dict__,
            "miner": B,
            "assignment": digest_b.hex(),
            "plan_fingerprint": plan_b.fingerprint(),
        }
    )
    update = st_save(dict(tensors))
    package = build_package(update, forged)
    picks = workproof.picks(BLOCK, ROUND, B, forged.segments)
    openings = build_openings(TraceDir(root / "a"), forged, picks)
    finding = trace.verify(
        package, openings, plan=plan_b, miner=B, assignment=digest_b, block_hash=BLOCK
    )
    assert finding.reason is Reason.BAD_START


def test_skipping_a_quarter_of_the_steps_is_caught_with_99_percent(runs) -> None:
    """Ground truth first: recompute every segment of the cheat's trace to find the bad
    ones. Then the rejection rate over 4000 random challenges must reach 0.99 and agree
    with the formula; and `verify` itself rejects exactly when a pick hits a bad segment."""
    root, _ = runs
    skipped = frozenset(range(1, STEPS, 4))  # 4 of 16 steps never computed
    package = train(root, A, "cheat", skipped)
    _, manifest = read_package(package)
    assert manifest is not None
    _, plan = bound(A)
    cheat = TraceDir(root / "cheat")
    bad = []
    for index in range(manifest.segments):
        run = trace.training.RoundTraining(plan, device=trace.training.resolve_device("cpu"))
        trace.restore_state(run, cheat.read(index))
        run.train_step()
        if spotcheck.leaf_hash(trace.state_bytes(run)) != manifest.leaf(index + 1):
            bad.append(index)
    assert bad == sorted(skipped)
    samples = workproof.samples_for_round(manifest.segments)
    rng = random.Random(7)
    challenges = [rng.randbytes(32) for _ in range(4000)]
    caught = sum(
        bool(set(workproof.picks(h, ROUND, A, manifest.segments)) & set(bad)) for h in challenges
    )
    expected = spotcheck.detection_probability(manifest.segments, len(bad), samples)
    assert caught / len(challenges) >= 0.99 and expected >= 0.99
    assert abs(caught / len(challenges) - expected) < 0.01
    for block in challenges[:3]:
        hit = bool(set(workproof.picks(block, ROUND, A, manifest.segments)) & set(bad))
        finding = check(root, "cheat", package, A, block=block)
        assert finding.reason is (Reason.SEGMENT_MISMATCH if hit else Reason.ACCEPTED)


def test_openings_that_miss_a_pick_or_lie_are_rejected(runs) -> None:
    root, packages = runs
    digest, plan = bound(A)
    _, manifest = read_package(packages["a"])
    assert manifest is not None
    picks = workproof.picks(BLOCK, ROUND, A, manifest.segments)
    opened = read_openings(build_openings(TraceDir(root / "a"), manifest, picks))

    def verdict(states: dict[int, bytes]) -> Reason:
        openings = st_save(
            {
                f"state/{i:06d}": np.frombuffer(raw, dtype=np.uint8).copy()
                for i, raw in states.items()
            }
        )
        return trace.verify(
            packages["a"], openings, plan=plan, miner=A, assignment=digest, block_hash=BLOCK
        ).reason

    missing = dict(opened)
    del missing[picks[0]]
    assert verdict(missing) is Reason.BAD_OPENING
    lying = dict(opened)
    lying[picks[0]] = TraceDir(root / "a").read((picks[0] + 1) % manifest.segments)
    assert verdict(lying) is Reason.BAD_OPENING
    none = trace.verify(
        packages["a"], None, plan=plan, miner=A, assignment=digest, block_hash=BLOCK
    )
    assert none.reason is Reason.NO_OPENINGS


def test_an_update_that_is_not_the_final_state_is_rejected(runs) -> None:
    root, packages = runs
    tensors, manifest = read_package(packages["a"])
    assert manifest is not None
    name = sorted(tensors)[0]
    changed = dict(tensors)
    changed[name] = changed[name] + np.float32(1e-3)
    package = build_package(st_save(changed), manifest)
    assert check(root, "a", package, A).reason is Reason.BAD_FINAL


def test_unbound_or_foreign_device_packages(runs) -> None:
    _, packages = runs
    digest, plan = bound(A)
    tensors, manifest = read_package(packages["a"])
    plain = st_save(dict(tensors))
    finding = trace.verify(plain, None, plan=plan, miner=A, assignment=digest, block_hash=BLOCK)
    assert finding.reason is Reason.NOT_BOUND
    assert manifest is not None
    on_gpu = build_package(plain, Manifest(**{**manifest.__dict__, "device_type": "cuda"}))
    with pytest.raises(trace.CannotVerifyHere, match="cuda"):
        trace.verify(on_gpu, None, plan=plan, miner=A, assignment=digest, block_hash=BLOCK)
    assert trace.verify_job(
        {"package": on_gpu, "openings": None, "plan": plan.to_json(), "miner": A,
         "assignment": digest.hex(), "block_hash": BLOCK.hex()}
    )["cannot_verify"]  # fmt: skip


def test_the_prover_finds_a_sealed_trace_by_the_package_hash(runs) -> None:
    root, packages = runs
    found = find_trace(root, hashlib.sha256(packages["b"]).digest())
    assert found is not None and found.path.name == "b"
    assert find_trace(root, b"\x00" * 32) is None
    assert st_load(found.read(0))  # a state is plain safetensors


def test_steps_retried_with_smaller_micro_batches_are_recomputed_the_same_way(tmp_path) -> None:
    """Out of memory at step 3 (8 → 4) and step 9 (4 → 2): the chunking changes those steps'
    float sums, so the manifest lists the retries and the validator replays them; every
    segment then reproduces bit for bit (without the replay, exactly those two do not)."""
    failed: set[tuple[int, int]] = set()

    def out_of_memory(step: int, micro: int) -> None:
        if (step, micro) in {(3, 8), (9, 4)} and (step, micro) not in failed:
            failed.add((step, micro))
            raise MemoryError("injected")

    digest, plan = bound(A)
    package = trace.train_bound(
        plan, miner=A, assignment=digest, trace=TraceDir(tmp_path / "s"), micro_hook=out_of_memory
    )
    _, manifest = read_package(package)
    assert manifest is not None and manifest.shrinks == ((3, 4), (9, 2))
    assert Manifest.from_bytes(manifest.to_bytes()) == manifest
    states = TraceDir(tmp_path / "s")
    differ: dict[bool, list[int]] = {True: [], False: []}
    for replay in (True, False):
        for index in range(manifest.segments):
            run = trace.training.RoundTraining(plan, device=trace.training.resolve_device("cpu"))
            if replay:
                run.replay_shrinks(manifest.shrinks)
            trace.restore_state(run, states.read(index))
            run.train_step()
            if spotcheck.leaf_hash(trace.state_bytes(run)) != manifest.leaf(index + 1):
                differ[replay].append(index)
    assert differ == {True: [], False: [3, 9]}
    rng = random.Random(3)
    block = next(
        b
        for b in (rng.randbytes(32) for _ in range(10_000))
        if {3, 9} <= set(workproof.picks(b, ROUND, A, manifest.segments))
    )
    finding = check(tmp_path, "s", package, A, block=block)
    assert finding.reason is Reason.ACCEPTED, finding.detail
