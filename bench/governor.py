"""The governor's reaction times against the real miner on the devnet (`RuntimeOptions.fast`).

An idle source this script drives stands in for the keyboard and mouse: "input" sets the
last-input time to now. Printed per cycle and as the worst of all cycles:

- input → every worker paused: the governor loop (0.5 s period) sees the input, the miner
  starts no new round, and the training worker checkpoints and reports "paused"
  (target ≤ 1 s);
- idle threshold → resumed: the idle time reaches the policy's minutes, the miner is mining
  again and the worker reports "resumed" (target ≤ 2 s).

    python -m bench.governor [--cycles N] [--idle-s SECONDS]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PAUSE_TARGET_S = 1.0
RESUME_TARGET_S = 2.0


class DrivenIdle:
    """Idle seconds since the last simulated input."""

    def __init__(self) -> None:
        self.last_input = time.monotonic() - 3600.0

    def touch(self) -> None:
        self.last_input = time.monotonic()

    def idle_seconds(self) -> float:
        return time.monotonic() - self.last_input


def _longer(items: list[float], count: int) -> bool:
    return len(items) > count


async def _until(predicate: Any, timeout_s: float) -> float:
    """Poll every 5 ms; the monotonic time it became true (TimeoutError otherwise)."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return time.monotonic()
        await asyncio.sleep(0.005)
    raise TimeoutError("condition never became true")


async def run(cycles: int, idle_s: float) -> int:
    from r3mes_desktop.app.governing import GovernorLoop
    from r3mes_desktop.app.runtime import Runtime, RuntimeOptions
    from r3mes_desktop.core.events import Event, Notice, StepProgress
    from r3mes_desktop.core.governor import Governor, OnlyWhenIdle, Sources
    from r3mes_desktop.core.miner import MinerState

    # long rounds, so a round is training when the input comes
    runtime = Runtime(options=RuntimeOptions.fast(round_steps=5000))
    worker: dict[str, float] = {}
    trained: list[float] = []

    def on_event(event: Event) -> None:
        now = time.monotonic()
        if isinstance(event, Notice) and event.message.startswith("mining paused"):
            worker["paused"] = now
        elif isinstance(event, Notice) and event.message == "mining resumed":
            worker["resumed"] = now
        elif isinstance(event, StepProgress) and event.step == "training":
            trained.append(now)

    runtime.bus.subscribe(on_event)
    await runtime.open()
    idle = DrivenIdle()
    governor = Governor([OnlyWhenIdle(idle_s / 60)], Sources(idle=idle))
    loop = GovernorLoop(
        governor, runtime.miner, runtime.bus, trainer=runtime.trainer, pow=runtime.pow
    )
    pauses: list[float] = []
    resumes: list[float] = []
    try:
        await runtime.miner.start()
        loop.start()
        await _until(lambda: bool(trained), 300)
        print(
            f"training started; idle policy {idle_s:g} s, governor period {loop.interval_s:g} s",
            flush=True,
        )
        for cycle in range(1, cycles + 1):
            await asyncio.sleep(0.3 + 0.23 * cycle)  # inputs land anywhere in the period
            worker.clear()
            idle.touch()
            touched = idle.last_input
            paused_at = await _until(
                lambda: "paused" in worker and runtime.miner.state is not MinerState.MINING, 30
            )
            pauses.append(paused_at - touched)
            steps_then = len(trained)
            threshold = touched + idle_s
            resumed_at = await _until(
                lambda: "resumed" in worker and runtime.miner.state is MinerState.MINING,
                idle_s + 30,
            )
            resumes.append(resumed_at - threshold)
            held_steps = [t for t in trained[steps_then:] if t < threshold]
            print(
                f"cycle {cycle}: input → every worker paused {pauses[-1]:.3f} s; "
                f"idle threshold → resumed {resumes[-1]:.3f} s; "
                f"training steps while held: {len(held_steps)}",
                flush=True,
            )
            await _until(functools.partial(_longer, trained, len(trained)), 60)  # training again
    finally:
        await loop.stop()
        await runtime.miner.stop()
        await runtime.close()
    worst_pause, worst_resume = max(pauses), max(resumes)
    print(
        f"input → paused: worst {worst_pause:.3f} s, mean {sum(pauses) / len(pauses):.3f} s "
        f"(target ≤ {PAUSE_TARGET_S:g} s): {'ok' if worst_pause <= PAUSE_TARGET_S else 'MISSED'}"
    )
    print(
        f"idle threshold → resumed: worst {worst_resume:.3f} s, mean "
        f"{sum(resumes) / len(resumes):.3f} s (target ≤ {RESUME_TARGET_S:g} s): "
        f"{'ok' if worst_resume <= RESUME_TARGET_S else 'MISSED'}"
    )
    return 0 if worst_pause <= PAUSE_TARGET_S and worst_resume <= RESUME_TARGET_S else 1


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.governor")
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--idle-s", type=float, default=3.0, help="the idle policy, seconds")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="r3mes-bench-governor-") as tmp:
        os.environ["R3MES_DATA_DIR"] = str(Path(tmp) / "data")
        os.environ["R3MES_CONFIG_DIR"] = str(Path(tmp) / "config")
        return asyncio.run(run(args.cycles, args.idle_s))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
