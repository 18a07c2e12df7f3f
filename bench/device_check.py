"""Training and verification on one device: determinism, speed, and the validator's share.

    python -m bench.device_check [--device auto|cpu|cuda] [--presets default,large] [--steps 60]
                                 [--json FILE]

For each preset: two miners' bound runs (`adapters.mining.trace.train_bound`) and one miner's
run repeated, to show that one device gives bit-identical packages (same hash) while two
miners give different ones; then the validator's sampled check of the honest run (accepted),
of a copy submitted by the other miner (rejected: not bound) and of a run that skipped a
quarter of its steps (rejected, or caught with the stated probability), timed against the
training it checks. On a CUDA machine it also reads the GPU through NVML (name, driver,
temperature, power, memory) when nvidia-ml-py is installed, and says so when it is not.
Imports only torch, numpy and safetensors beyond the package (runs on a bare GPU image).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _nvml() -> dict[str, Any]:
    try:
        import pynvml
    except ImportError:
        return {"skipped": "nvidia-ml-py is not installed"}
    try:
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
        name = pynvml.nvmlDeviceGetName(handle)
        return {
            "name": name.decode() if isinstance(name, bytes) else str(name),
            "driver": str(pynvml.nvmlSystemGetDriverVersion()),
            "temperature_c": int(
                pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)
            ),
            "power_w": pynvml.nvmlDeviceGetPowerUsage(handle) / 1000.0,
            "power_limit_w": pynvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000.0,
            "memory_total_mib": memory.total // 2**20,
            "memory_used_mib": memory.used // 2**20,
        }
    except Exception as exc:  # NVML absent or refused in this container: say so
        return {"skipped": f"NVML unavailable: {type(exc).__name__}: {exc}"}


def check_preset(preset: str, steps: int, device: str, root: Path) -> dict[str, Any]:
    from r3mes_desktop.adapters.mining import trace
    from r3mes_desktop.adapters.mining.commitments import TraceDir, build_openings, read_package
    from r3mes_desktop.adapters.mining.presets import make_plan
    from r3mes_desktop.core import workproof

    miner_a, miner_b = "0x" + "a1" * 20, "0x" + "b2" * 20
    seed, round_id = 2026, 1

    def bound(miner: str) -> tuple[bytes, Any]:
        digest = workproof.assignment(seed, miner, round_id)
        plan = make_plan(
            round_id=round_id,
            seed=workproof.training_seed(digest),
            base_model_id="r3mes-bench",
            steps=steps,
            hyperparams={"preset": preset},
        )
        return digest, plan

    def run(miner: str, name: str, skipped: frozenset[int] = frozenset()) -> tuple[bytes, float]:
        digest, plan = bound(miner)
        started = time.perf_counter()
        package = trace.train_bound(
            plan,
            miner=miner,
            assignment=digest,
            trace=TraceDir(root / f"{preset}-{name}"),
            device=device,
            skipped_steps=skipped,
        )
        return package, time.perf_counter() - started

    run(miner_a, "warmup")  # kernels, allocator, backbone generation
    honest, train_s = run(miner_a, "a1")
    again, _ = run(miner_a, "a2")
    other, _ = run(miner_b, "b")
    _, manifest = read_package(honest)
    assert manifest is not None
    block = hashlib.sha256(b"bench block " + preset.encode()).digest()
    picks = workproof.picks(block, round_id, miner_a, manifest.segments)
    openings = build_openings(TraceDir(root / f"{preset}-a1"), manifest, picks)
    digest_a, plan_a = bound(miner_a)
    digest_b, plan_b = bound(miner_b)
    started = time.perf_counter()
    verdict = trace.verify(
        honest,
        openings,
        plan=plan_a,
        miner=miner_a,
        assignment=digest_a,
        block_hash=block,
        device=device,
    )
    verify_s = time.perf_counter() - started
    copied = trace.verify(
        honest,
        openings,
        plan=plan_b,
        miner=miner_b,
        assignment=digest_b,
        block_hash=block,
        device=device,
    )
    skipped = frozenset(range(0, steps, 4))  # a quarter of the steps never computed
    cheat, _ = run(miner_a, "cheat", skipped)
    _, cheat_manifest = read_package(cheat)
    assert cheat_manifest is not None
    cheat_picks = workproof.picks(block, round_id, miner_a, cheat_manifest.segments)
    cheated = trace.verify(
        cheat,
        build_openings(TraceDir(root / f"{preset}-cheat"), cheat_manifest, cheat_picks),
        plan=plan_a,
        miner=miner_a,
        assignment=digest_a,
        block_hash=block,
        device=device,
    )
    samples = workproof.samples_for_round(manifest.segments)
    tokens = steps * plan_a.model.batch_size * plan_a.model.seq_len
    return {
        "preset": preset,
        "steps": steps,
        "train_s": round(train_s, 4),
        "tokens_per_s": round(tokens / train_s, 1),
        "same_miner_same_hash": hashlib.sha256(honest).digest() == hashlib.sha256(again).digest(),
        "two_miners_differ": hashlib.sha256(honest).digest() != hashlib.sha256(other).digest(),
        "package_sha256": hashlib.sha256(honest).hexdigest(),
        "samples": samples,
        "segments": manifest.segments,
        "verify_s": round(verify_s, 4),
        "validator_share": round(verify_s / train_s, 4),
        "honest": trace.describe(verdict),
        "copied_by_other_miner": trace.describe(copied),
        "skipped_quarter": trace.describe(cheated),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto: cuda when present, else cpu")
    parser.add_argument("--presets", default="default,large")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    import torch

    from r3mes_desktop.adapters.mining import training

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    report: dict[str, Any] = {
        "torch": training.TORCH_VERSION,
        "device": args.device,
        "cuda_available": torch.cuda.is_available(),
        "cpu_count": os.cpu_count(),
    }
    if args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            print("CUDA is not available here: nothing checked (skipped)")
            return 1
        report["gpu"] = torch.cuda.get_device_name(0)
        report["nvml_before"] = _nvml()
    with tempfile.TemporaryDirectory() as tmp:
        report["presets"] = [
            check_preset(p, args.steps, args.device, Path(tmp)) for p in args.presets.split(",")
        ]
    if args.device.startswith("cuda"):
        report["nvml_after"] = _nvml()
    text = json.dumps(report, indent=1)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
