"""Training throughput: the worker process against a bare torch loop, same model/data/steps.

Run: .venv/bin/python -m bench.training [--preset default] [--steps 40] [--device cpu]
     [--repeats 5]. Prints tokens/s of each and their ratio (target >= 0.95).

Kept fair: both sides get the same torch settings from `training.configure_determinism`
(deterministic algorithms, the same thread count — printed for both) and the same
environment (`mining.training` is imported before torch here too, so OpenMP's passive
wait policy applies on both sides); both are warmed up once before timing (the worker is
a warm, long-lived process, as between rounds in the app); both clocks start before the
model is built and stop when the update exists (the worker's also covers dispatching the
job, per-step progress frames, checkpoints every `checkpoint_interval` steps and sending
the result back). Repeats alternate the two (and which goes first), since other processes
share the cores: the ratio is given best-vs-best and as the median of back-to-back pairs.
The worker's own breakdown (setup, steps, blocking checkpoint capture, overlapped
checkpoint writes) shows where any difference goes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from r3mes_desktop.adapters.mining.settings import MiningConfig
from r3mes_desktop.adapters.mining.worker import ProcessTrainer, plan_for
from r3mes_desktop.core.steps import RoundSpec


def bare_loop(spec: RoundSpec, config: MiningConfig) -> tuple[float, int]:
    """Seconds for the round as the simplest torch script would train it, and its threads."""
    from r3mes_desktop.adapters.mining import training  # first: sets the environment torch reads

    training.configure_determinism(config.num_threads)
    import torch
    import torch.nn.functional as F

    from r3mes_desktop.adapters.mining.data import SyntheticLanguage
    from r3mes_desktop.adapters.mining.model import TinyLM

    plan = plan_for(spec, config)
    p = plan.model
    device = training.resolve_device(config.device)
    started = time.perf_counter()
    model = TinyLM(p, base_model_id=plan.base_model_id, lora_seed=1).to(device)
    params = list(model.lora_parameters().values())
    opt = torch.optim.AdamW(params, lr=p.lr, weight_decay=0.0, foreach=False)
    lang = SyntheticLanguage(plan.seed, p.vocab_size)
    for step in range(plan.steps):
        batch = torch.from_numpy(lang.batch(step, p.batch_size, p.seq_len)).to(device)
        for i in range(0, p.batch_size, p.micro_batch):
            chunk = batch[i : i + p.micro_batch]
            logits = model(chunk[:, :-1])
            loss = F.cross_entropy(logits.reshape(-1, p.vocab_size), chunk[:, 1:].reshape(-1))
            torch.autograd.backward(loss * (chunk.shape[0] / p.batch_size))
        opt.step()
        opt.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started, int(torch.get_num_threads())


async def worker_round(
    trainer: ProcessTrainer, spec: RoundSpec, tx: str
) -> tuple[float, Mapping[str, float]]:
    started = time.perf_counter()
    result = await trainer.train(transaction_id=tx, spec=spec, progress=lambda f, d: None)
    elapsed = time.perf_counter() - started
    await trainer.discard_checkpoints(tx)
    return elapsed, result.metrics


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="default")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    config = MiningConfig(device=args.device, preset=args.preset)
    spec = RoundSpec(round_id=1, seed=7, difficulty=20, base_model_id="bench", steps=args.steps)
    plan = plan_for(spec, config)
    tokens = plan.steps * plan.model.batch_size * plan.model.seq_len
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as root:
        trainer = ProcessTrainer(config, checkpoint_root=Path(root))
        await trainer.start()  # warm worker, as between rounds in the app
        await worker_round(trainer, spec, "warmup")
        _, bare_threads = bare_loop(spec, config)  # warm-up (allocator, kernels)
        bare_times: list[float] = []
        worker_times: list[float] = []
        metrics: list[Mapping[str, float]] = []
        for i in range(args.repeats):
            if i % 2:  # alternate which side goes first: load drifting up or down favours neither
                bare_times.append(bare_loop(spec, config)[0])
            elapsed, m = await worker_round(trainer, spec, f"bench-{i}")
            worker_times.append(elapsed)
            metrics.append(m)
            if not i % 2:
                bare_times.append(bare_loop(spec, config)[0])
        await trainer.shutdown()
    bare = tokens / min(bare_times)
    worker = tokens / min(worker_times)
    best = metrics[worker_times.index(min(worker_times))]
    print(
        f"preset={args.preset} device={args.device} steps={plan.steps} tokens/round={tokens} "
        f"threads: bare {bare_threads}, worker {int(best.get('threads', 0))}; "
        f"load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after "
        f"({os.cpu_count()} cores shared with other processes)"
    )
    print(f"bare torch loop : {bare:10.0f} tokens/s  (runs: {[round(t, 3) for t in bare_times]} s)")
    print(
        f"worker process  : {worker:10.0f} tokens/s  "
        f"(runs: {[round(t, 3) for t in worker_times]} s;"
        f" includes checkpoints every {config.checkpoint_interval} steps, IPC, progress)"
    )
    job = best.get("time_job_s", 0.0)
    print(
        f"worker's best round, inside the child: setup {best.get('time_setup_s', 0.0):.3f} s, "
        f"steps {best.get('time_steps_s', 0.0):.3f} s, checkpoint capture "
        f"{best.get('time_capture_s', 0.0):.3f} s (blocking), checkpoint writes "
        f"{best.get('time_checkpoint_write_s', 0.0):.3f} s (overlapped), job {job:.3f} s; "
        f"dispatch + result transfer {min(worker_times) - job:.3f} s"
    )
    outside = [w - m.get("time_steps_s", 0.0) for w, m in zip(worker_times, metrics, strict=True)]
    print(
        f"medians over the {args.repeats} runs: bare round {statistics.median(bare_times):.3f} s; "
        f"worker round {statistics.median(worker_times):.3f} s, of which steps "
        f"{statistics.median(m.get('time_steps_s', 0.0) for m in metrics):.3f} s and "
        f"everything else (setup, capture, IPC, result) {statistics.median(outside):.3f} s"
    )
    pairs = sorted(b / w for b, w in zip(bare_times, worker_times, strict=True))
    print(
        f"ratio worker/bare: {worker / bare:.3f} best-vs-best, "
        f"{statistics.median(pairs):.3f} median of back-to-back pairs  (target >= 0.95)"
    )


if __name__ == "__main__":
    asyncio.run(main())
