"""Checkpoint cost: save time as a share of training time at the default interval.

Run: .venv/bin/python -m bench.checkpoint [--preset default] [--steps 40]. Trains a round
in-process, timing the steps and, separately, every save the worker would make
(state capture + safetensors + JSON + fsyncs + pruning). Target share: <= 5%. The worker
blocks training only for the capture (the rest runs on a background thread, overlapping
the next steps), so that share is printed too.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from r3mes_desktop.adapters.mining.checkpoint import CheckpointStore
from r3mes_desktop.adapters.mining.settings import MiningConfig
from r3mes_desktop.adapters.mining.worker import plan_for
from r3mes_desktop.core.steps import RoundSpec


def main() -> None:
    from r3mes_desktop.adapters.mining.training import (
        RoundTraining,
        configure_determinism,
        resolve_device,
    )

    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="default")
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    config = MiningConfig(device="cpu", preset=args.preset)
    spec = RoundSpec(round_id=1, seed=3, difficulty=20, base_model_id="bench", steps=args.steps)
    plan = plan_for(spec, config)
    configure_determinism(config.num_threads)
    run = RoundTraining(plan, device=resolve_device("cpu"))
    train_s = save_s = capture_s = 0.0
    saves = 0
    size = 0
    with tempfile.TemporaryDirectory() as root:
        store = CheckpointStore(Path(root), keep=config.keep_checkpoints)
        while run.step < plan.steps:
            t0 = time.perf_counter()
            run.train_step()
            train_s += time.perf_counter() - t0
            if run.step % config.checkpoint_interval == 0:
                t0 = time.perf_counter()
                arrays, state = run.checkpoint_state()
                capture_s += time.perf_counter() - t0
                info = store.save("bench", round_id=1, step=run.step, tensors=arrays, state=state)
                save_s += time.perf_counter() - t0
                saves += 1
                size = info.size_bytes
    print(f"preset={args.preset} steps={plan.steps} interval={config.checkpoint_interval}")
    print(
        f"training: {train_s:.3f} s; {saves} saves of {size / 1024:.0f} KiB: {save_s:.3f} s "
        f"({save_s / max(saves, 1) * 1000:.1f} ms each)"
    )
    print(f"save share of training time: {save_s / train_s:.4f}  (target <= 0.05)")
    print(f"blocking part (state capture) : {capture_s / train_s:.4f} of training time")


if __name__ == "__main__":
    main()
