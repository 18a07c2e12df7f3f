"""The training trace: committed states, the bound update package, openings, and the check.

The rules are `core.workproof`'s; this module holds their torch side. A *state* is the full
training state at a step (adapters, optimizer moments, RNG states, counters) as canonical
safetensors bytes: restoring one and training `segment_steps` steps gives, bit for bit, the
bytes of the next (`RoundTraining` is deterministic on one device type and thread count).

Imports torch through `training`: worker processes only (the miner's training worker, the
validator's verification worker).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from r3mes_desktop.adapters.mining import training
from r3mes_desktop.adapters.mining.commitments import (
    TraceDir,
    build_package,
    leaf_index,
    read_openings,
    read_package,
)
from r3mes_desktop.adapters.mining.presets import TrainPlan
from r3mes_desktop.core import spotcheck, workproof
from r3mes_desktop.core.workproof import Manifest, Reason

STATE_META = "meta/state"


def _text_array(text: str) -> np.ndarray:
    return np.frombuffer(text.encode(), dtype=np.uint8).copy()


def state_bytes(run: training.RoundTraining) -> bytes:
    """The run's full state as canonical bytes (keys sorted, JSON sorted)."""
    arrays, state = run.checkpoint_state()
    arrays[STATE_META] = _text_array(json.dumps(state, sort_keys=True, separators=(",", ":")))
    return bytes(st_save({k: arrays[k] for k in sorted(arrays)}))


def restore_state(run: training.RoundTraining, raw: bytes) -> None:
    arrays = st_load(raw)
    state = json.loads(arrays.pop(STATE_META).tobytes())
    run.restore(arrays, state)


def build_manifest(
    run: training.RoundTraining,
    plan: TrainPlan,
    trace: TraceDir,
    *,
    miner: str,
    assignment: bytes,
    segment_steps: int,
) -> Manifest:
    count = -(-plan.steps // segment_steps) + 1
    leaves = trace.leaves(count)
    return Manifest(
        round_id=plan.round_id,
        miner=miner,
        assignment=assignment.hex(),
        steps=plan.steps,
        segment_steps=segment_steps,
        leaves=tuple(leaf.hex() for leaf in leaves),
        root=spotcheck.merkle_root(leaves).hex(),
        device_type=run.device.type,
        threads=training.torch_threads(),
        plan_fingerprint=plan.fingerprint(),
        shrinks=tuple(run.shrinks),
    )


@dataclass(frozen=True)
class Finding:
    """A validator's conclusion about one submission (`reason` 0: accepted)."""

    reason: Reason
    detail: str
    segments_checked: int = 0
    steps_recomputed: int = 0


class CannotVerifyHere(Exception):
    """This validator cannot reproduce the run (another device type): it posts nothing."""


def bound_manifest(
    package: bytes, *, plan: TrainPlan, miner: str, assignment: bytes
) -> tuple[dict[str, np.ndarray], Manifest] | Finding:
    """The package's tensors and manifest if it is bound to (plan, miner, assignment)."""
    try:
        tensors, manifest = read_package(package)
    except Exception as exc:
        return Finding(Reason.BAD_PACKAGE, f"unreadable package: {exc}")
    if manifest is None:
        return Finding(Reason.NOT_BOUND, "the package carries no manifest (unbound work)")
    if manifest.miner.lower() != miner.lower():
        return Finding(Reason.NOT_BOUND, f"the package names miner {manifest.miner}, not {miner}")
    if manifest.round_id != plan.round_id or manifest.assignment != assignment.hex():
        return Finding(Reason.NOT_BOUND, "the package names another round or assignment")
    if manifest.plan_fingerprint != plan.fingerprint() or manifest.steps != plan.steps:
        return Finding(Reason.NOT_BOUND, "the package was trained to another plan")
    if manifest.segment_steps != workproof.SEGMENT_STEPS:
        return Finding(
            Reason.BAD_PACKAGE,
            f"segment_steps {manifest.segment_steps}; validators check {workproof.SEGMENT_STEPS}",
        )
    return tensors, manifest


def verify(
    package: bytes,
    openings: bytes | None,
    *,
    plan: TrainPlan,
    miner: str,
    assignment: bytes,
    block_hash: bytes,
    device: str = "cpu",
    adapter: dict[str, np.ndarray] | None = None,
    dataset: bytes | None = None,
) -> Finding:
    """Check one submission as `core.workproof` describes; deterministic for a given input.
    `adapter`: the network adapter the round trains from (the plan names its sha256)."""
    bound = bound_manifest(package, plan=plan, miner=miner, assignment=assignment)
    if isinstance(bound, Finding):
        return bound
    tensors, manifest = bound
    torch_device = training.resolve_device(device)
    if manifest.device_type != torch_device.type:
        raise CannotVerifyHere(
            f"the run was on {manifest.device_type}; this validator computes on {torch_device.type}"
        )
    if openings is None:
        return Finding(Reason.NO_OPENINGS, "no openings were published")
    try:
        opened = read_openings(openings)
    except Exception as exc:
        return Finding(Reason.BAD_OPENING, f"unreadable openings: {exc}")
    picked = workproof.picks(block_hash, plan.round_id, miner, manifest.segments)
    for index in sorted({*picked, manifest.segments}):
        if index not in opened:
            return Finding(Reason.BAD_OPENING, f"state {index} was picked but not opened")
        if spotcheck.leaf_hash(opened[index]) != manifest.leaf(index):
            return Finding(
                Reason.BAD_OPENING, f"opened state {index} is not committed leaf {index}"
            )
    training.configure_determinism(manifest.threads)
    start = training.RoundTraining(plan, device=torch_device, adapter=adapter, dataset=dataset)
    if spotcheck.leaf_hash(state_bytes(start)) != manifest.leaf(0):
        return Finding(Reason.BAD_START, "leaf 0 is not the assignment's starting state")
    final = st_load(opened[manifest.segments])
    for name, value in tensors.items():
        committed = final.get(f"lora/{name}")
        if committed is None or committed.tobytes() != value.tobytes():
            return Finding(Reason.BAD_FINAL, f"update tensor {name} differs from the final state")
    if len(tensors) != sum(1 for k in final if k.startswith("lora/")):
        return Finding(Reason.BAD_FINAL, "the update lacks adapters of the final state")
    recomputed = 0
    run = start  # one model for every segment: restoring replaces all of its state
    run.replay_shrinks(manifest.shrinks)
    for index in picked:
        run.optimizer.state.clear()  # a start state without optimizer moments has none
        restore_state(run, opened[index])
        end = workproof.segment_end(manifest, index + 1)
        while run.step < end:
            run.train_step()
            recomputed += 1
        if spotcheck.leaf_hash(state_bytes(run)) != manifest.leaf(index + 1):
            return Finding(
                Reason.SEGMENT_MISMATCH,
                f"segment {index} (steps {index * manifest.segment_steps}..{end}) did not "
                f"reproduce leaf {index + 1}",
                segments_checked=len(picked),
                steps_recomputed=recomputed,
            )
    return Finding(
        Reason.ACCEPTED,
        f"{len(picked)} of {manifest.segments} segments reproduced bit for bit",
        segments_checked=len(picked),
        steps_recomputed=recomputed,
    )


def describe(finding: Finding) -> dict[str, Any]:
    return {
        "reason": int(finding.reason),
        "reason_text": finding.reason.text,
        "detail": finding.detail,
        "segments_checked": finding.segments_checked,
        "steps_recomputed": finding.steps_recomputed,
    }


def train_bound(
    plan: TrainPlan,
    *,
    miner: str,
    assignment: bytes,
    trace: TraceDir,
    device: str = "cpu",
    num_threads: int = 0,
    skipped_steps: frozenset[int] = frozenset(),
    dataset: bytes | None = None,
    adapter: bytes | None = None,
    micro_hook: training.MicroHook | None = None,
    shrinks: Sequence[tuple[int, int]] = (),
) -> bytes:
    """Train a bound run in this process and return its package (tests, benchmarks, and
    the free-rider of the chaos harness). `skipped_steps`: steps a cheating miner claims but
    does not compute (its counters advance, its weights do not); `micro_hook`: called
    before each micro-batch (tests raise MemoryError there); `shrinks`: another run's
    out-of-memory retries to replay (a full recomputation of its package)."""
    training.configure_determinism(num_threads)
    run = training.RoundTraining(
        plan,
        device=training.resolve_device(device),
        dataset=dataset,
        adapter=None if adapter is None else dict(st_load(adapter)),
        micro_hook=micro_hook,
    )
    run.replay_shrinks(shrinks)
    trace.write(0, state_bytes(run))
    while run.step < plan.steps:
        if run.step in skipped_steps:
            run.step += 1
            run.tokens += plan.model.batch_size * plan.model.seq_len
        else:
            run.train_step()
        index = leaf_index(run.step, workproof.SEGMENT_STEPS, plan.steps)
        if index is not None:
            trace.write(index, state_bytes(run))
    manifest = build_manifest(
        run, plan, trace, miner=miner, assignment=assignment, segment_steps=workproof.SEGMENT_STEPS
    )
    package = build_package(run.output().data, manifest)
    trace.seal(manifest, package)
    return package


def verify_job(job: dict[str, Any]) -> dict[str, Any]:
    """`verify` with plain arguments: the target a validator's worker process runs (the
    event loop never runs torch). Returns `describe(finding)`, or {"cannot_verify": why}."""
    try:
        finding = verify(
            job["package"],
            job["openings"],
            plan=TrainPlan.from_json(job["plan"]),
            miner=job["miner"],
            assignment=bytes.fromhex(job["assignment"]),
            block_hash=bytes.fromhex(job["block_hash"]),
            device=job.get("device", "cpu"),
            adapter=dict(st_load(job["adapter"])) if job.get("adapter") else None,
            dataset=job.get("dataset") or None,
        )
    except CannotVerifyHere as exc:
        return {"cannot_verify": str(exc)}
    return describe(finding)
