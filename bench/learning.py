"""Does the network learn? Federated rounds of bound miners against one centralised run.

    python -m bench.learning [--miners 3] [--versions 10] [--steps 20] [--preset default]

Each model version: every miner trains `steps` steps on its own assignment (the same
round seed, its own address) starting from the current network adapter, exactly as a bound
miner does; the updates are aggregated (token-weighted, byte-reproducible: checked by
aggregating again in another order) into the next version, and the version's held-out loss
is measured. The centralised run is one process with the same token budget and the same
optimizer (AdamW, continuous), evaluated at the same token counts. Printed: the loss per
version side by side, the improvement ratio (network's loss drop / centralised loss drop,
target >= 0.8) and the bytes uploaded per update and per version.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any


def run(
    miners: int, versions: int, steps: int, preset: str, base: str, device: str = "cpu"
) -> dict[str, Any]:
    from r3mes_desktop.adapters.mining import learning, training
    from r3mes_desktop.adapters.mining.presets import make_plan
    from r3mes_desktop.core import workproof

    training.configure_determinism(0)
    addresses = [f"0x{(i + 1):040x}" for i in range(miners)]
    probe = make_plan(round_id=1, seed=1, base_model_id=base, steps=steps,
                      hyperparams={"preset": preset})  # fmt: skip
    adapter = learning.genesis_adapter(probe)
    network_loss = [learning.eval_loss(probe, adapter, device=device)]
    update_bytes: list[int] = []
    version_bytes: list[int] = []
    started = time.perf_counter()
    for version in range(1, versions + 1):
        round_seed = 1000 + version
        updates = []
        for address in addresses:
            digest = workproof.assignment(round_seed, address, version)
            plan = make_plan(
                round_id=version, seed=workproof.training_seed(digest), base_model_id=base,
                steps=steps, hyperparams={"preset": preset},
            )  # fmt: skip
            plan = type(plan)(
                **{**plan.__dict__, "adapter_sha256": learning.adapter_sha256(adapter)}
            )
            run = training.RoundTraining(plan, device=training.resolve_device(device),
                                         adapter=adapter)  # fmt: skip
            while run.step < plan.steps:
                run.train_step()
            out = run.output()
            update_bytes.append(len(out.data))
            updates.append((learning.update_tensors(out.data), out.tokens))
        adapter = learning.aggregate(updates)
        again = learning.aggregate(list(reversed(updates)))
        assert learning.adapter_bytes(again) == learning.adapter_bytes(adapter), "not reproducible"
        version_bytes.append(len(learning.adapter_bytes(adapter)))
        network_loss.append(learning.eval_loss(probe, adapter, device=device))
        print(f"version {version}: network eval loss {network_loss[-1]:.4f}", flush=True)
    network_s = time.perf_counter() - started

    started = time.perf_counter()
    central = make_plan(round_id=1, seed=77, base_model_id=base, steps=miners * steps * versions,
                        hyperparams={"preset": preset})  # fmt: skip
    run = training.RoundTraining(central, device=training.resolve_device(device))
    central_loss = [learning.eval_loss(probe, _params(run), device=device)]
    for _version in range(versions):
        for _ in range(miners * steps):
            run.train_step()
        central_loss.append(learning.eval_loss(probe, _params(run), device=device))
    central_s = time.perf_counter() - started
    drop_network = network_loss[0] - network_loss[-1]
    drop_central = central_loss[0] - central_loss[-1]
    return {
        "miners": miners, "versions": versions, "steps_per_round": steps, "preset": preset,
        "network_eval_loss": [round(x, 4) for x in network_loss],
        "centralised_eval_loss": [round(x, 4) for x in central_loss],
        "improvement_network": round(drop_network, 4),
        "improvement_centralised": round(drop_central, 4),
        "ratio": round(drop_network / drop_central, 3) if drop_central > 0 else None,
        "bytes_per_update": update_bytes[0], "bytes_per_version": version_bytes[0],
        "device": device, "network_s": round(network_s, 1), "centralised_s": round(central_s, 1),
    }  # fmt: skip


def _params(run: Any) -> dict[str, Any]:
    return {k: v.detach().cpu().numpy().copy() for k, v in run.params.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--miners", type=int, default=3)
    parser.add_argument("--versions", type=int, default=10)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--preset", default="default")
    parser.add_argument("--base-model", default="r3mes-devnet-lm-v1")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    report = run(args.miners, args.versions, args.steps, args.preset, args.base_model, args.device)
    print("version  network  centralised")
    for i, (a, b) in enumerate(
        zip(report["network_eval_loss"], report["centralised_eval_loss"], strict=True)
    ):
        print(f"{i:7d}  {a:7.4f}  {b:11.4f}")
    target = report["ratio"] is not None and report["ratio"] >= 0.8
    print(f"improvement ratio {report['ratio']} (target >= 0.8: {'PASS' if target else 'FAIL'})")
    print(
        f"bytes per update {report['bytes_per_update']}, per version {report['bytes_per_version']}"
    )
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
