"""The caps, measured: the CPU share a thread cap actually uses, and the duty cycle's
accuracy, side by side in one run.

1. Thread caps. The training worker (default preset, CPU) with `num_threads = N`, and a
   proof-of-work search with N processes: the CPU time their processes used (psutil,
   every thread) over the wall time, as a share of the machine, against the cap's share
   N / cores. Other programs on the machine can only push the share below the cap.
2. Duty cycle. The same worker at duty 1, 0.5 and 0.25 (`ProcessTrainer.set_duty`): the
   share of the training loop's time spent in steps (the worker's own timing), and the
   share of one core it used (psutil), each against the duty (and, for the CPU share,
   relative to its share at duty 1).

Target: every ratio within 10 % of 1.

    python -m bench.caps [--steps N] [--priority normal|low|idle] [--preset P]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TOLERANCE = 0.10


def _verdict(ratio: float) -> str:
    return "ok" if abs(ratio - 1) <= TOLERANCE else "MISSED"


def _cap_verdict(ratio: float) -> str:
    """A cap is a ceiling: over it is a failure, under it means the work could not keep
    that many threads busy (small operations parallelise poorly)."""
    if ratio > 1 + TOLERANCE:
        return "OVER THE CAP"
    return "ok" if ratio >= 1 - TOLERANCE else "under the cap (the work does not fill it)"


def schedstat(pids: list[int]) -> tuple[float, float] | None:
    """(CPU seconds, seconds runnable but waiting for a core) summed over every thread of
    `pids`, from Linux's /proc/<pid>/task/<tid>/schedstat; None elsewhere."""
    cpu = wait = 0.0
    try:
        for pid in pids:
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    run_ns, wait_ns, _ = f.read().split()
                cpu += int(run_ns) / 1e9
                wait += int(wait_ns) / 1e9
    except (OSError, ValueError):
        return None
    return cpu, wait


class CpuMeter:
    """Cores used and cores demanded by processes between two marks.

    Used = CPU seconds / wall seconds (psutil, every thread). Demanded = (CPU seconds +
    seconds spent runnable in the run queue) / wall seconds (Linux schedstat): what the
    processes would have used had no other program competed for the cores. On a machine
    shared with other work the cap bounds the demand; the use can only be lower."""

    def __init__(self, pids: list[int]) -> None:
        import psutil

        self.pids = pids
        self.processes = [psutil.Process(pid) for pid in pids]
        self.marks: list[tuple[float, float, tuple[float, float] | None]] = []

    def mark(self) -> None:
        cpu = sum(p.cpu_times().user + p.cpu_times().system for p in self.processes)
        self.marks.append((time.monotonic(), cpu, schedstat(self.pids)))

    def cores(self, skip: int = 2) -> tuple[float, float | None]:
        """(cores used, cores demanded or None) from the `skip`-th mark to the last: the
        first steps warm up (allocations, thread pool start)."""
        (t0, c0, s0), (t1, c1, s1) = self.marks[min(skip, len(self.marks) - 2)], self.marks[-1]
        wall = max(t1 - t0, 1e-9)
        demanded = None
        if s0 is not None and s1 is not None:
            demanded = (s1[0] + s1[1] - s0[0] - s0[1]) / wall
        return (c1 - c0) / wall, demanded


async def train_measured(
    trainer: Any, round_id: int, steps: int, duty: float, preset: str = "default"
) -> tuple[dict[str, float], float, float | None]:
    from r3mes_desktop.core.steps import RoundSpec

    await trainer.start()
    meter = CpuMeter([trainer.worker_pid])
    trainer.set_duty(duty)
    spec = RoundSpec(
        round_id=round_id,
        seed=round_id,
        difficulty=16,
        base_model_id="bench-caps",
        steps=steps,
        hyperparams={"preset": preset},
    )
    result = await trainer.train(
        transaction_id=f"bench-caps-{round_id}", spec=spec, progress=lambda _f, _d: meter.mark()
    )
    used, demanded = meter.cores()
    return result.metrics, used, demanded


def pow_cores(processes: int, seconds: float, priority: str) -> tuple[float, float | None]:
    """(cores used, cores demanded) by a proof-of-work search of `processes` processes (a
    32-bit search: it runs the whole window)."""
    from r3mes_desktop.adapters.mining.pow import NonceSearch
    from r3mes_desktop.core.pow import pow_prefix

    search = NonceSearch(
        pow_prefix(bytes(32), "0x" + "11" * 20, 1), 32, processes=processes, priority=priority
    ).start()
    try:
        time.sleep(0.5)  # started, hasher chosen
        meter = CpuMeter([p.pid for p in search.procs if p.pid is not None])
        meter.mark()
        time.sleep(seconds)
        meter.mark()
        return meter.cores(skip=0)
    finally:
        search.cancel()
        search.join()


def _cores(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _row(what: str, cap: int, used: float, demanded: float | None, cores: int) -> float:
    """Print one cap's line; its ratio is demanded / cap (used / cap without schedstat)."""
    ratio = (demanded if demanded is not None else used) / cap
    print(
        f"{what:<28}{cap:>6}{_cores(demanded):>10}{ratio:>8.3f}{used:>8.2f}"
        f"{used / cores:>12.1%}  {_cap_verdict(ratio)}"
    )
    return ratio


async def run(steps: int, priority: str, preset: str) -> int:
    from r3mes_desktop.adapters.mining.settings import MiningConfig
    from r3mes_desktop.adapters.mining.worker import ProcessTrainer

    cores = os.cpu_count() or 1
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine: {cores} cores, load average {load:.2f} before the run, priority {priority}")
    caps = sorted({1, max(1, cores // 2), max(1, cores - 1)} | ({cores} if cores <= 2 else set()))
    ratios: list[float] = []  # thread caps: demanded / cap
    duty_ratios: list[float] = []  # duty cycle: measured / duty
    print("\n1. thread caps: cores demanded (CPU + run-queue wait) and used, against the cap")
    print(f"{'what':<28}{'cap':>6}{'demanded':>10}{'ratio':>8}{'used':>8}{'used share':>12}")
    with tempfile.TemporaryDirectory(prefix="r3mes-bench-caps-") as tmp:
        for n in caps:
            config = MiningConfig(
                device="cpu", num_threads=n, priority=priority, checkpoint_interval=1000
            )
            trainer = ProcessTrainer(config, checkpoint_root=Path(tmp) / f"ckpt-{n}")
            try:
                _, used, demanded = await train_measured(trainer, 100 + n, steps, 1.0, preset)
            finally:
                await trainer.shutdown()
            ratios.append(_row(f"training, {n} thread(s)", n, used, demanded, cores))
        for n in caps:
            used, demanded = await asyncio.to_thread(pow_cores, n, 3.0, priority)
            ratios.append(_row(f"proof of work, {n} proc(s)", n, used, demanded, cores))

        print("\n2. duty cycle (training, 1 thread): measured share against the duty")
        print(
            f"{'duty':>6}{'steps/loop':>12}{'ratio':>8}{'demanded':>10}{'vs duty 1':>11}"
            f"{'ratio':>8}{'used':>8}{'throttle s':>12}"
        )
        config = MiningConfig(
            device="cpu", num_threads=1, priority=priority, checkpoint_interval=1000
        )
        trainer = ProcessTrainer(config, checkpoint_root=Path(tmp) / "ckpt-duty")
        full = 0.0
        try:
            for i, duty in enumerate((1.0, 0.5, 0.25)):
                metrics, used, demanded = await train_measured(trainer, 200 + i, steps, duty)
                share = metrics["time_steps_s"] / metrics["time_loop_s"]
                busy = demanded if demanded is not None else used
                full = full or busy
                relative = busy / full
                step_ratio, cpu_ratio = share / duty, relative / duty
                if duty < 1:
                    duty_ratios += [step_ratio, cpu_ratio]
                print(
                    f"{duty:>6.2f}{share:>12.3f}{step_ratio:>8.3f}{_cores(demanded):>10}"
                    f"{relative:>11.3f}{cpu_ratio:>8.3f}{used:>8.2f}"
                    f"{metrics['time_throttle_s']:>12.2f}  "
                    f"{_verdict(step_ratio)}/{_verdict(cpu_ratio)}"
                )
        finally:
            await trainer.shutdown()
    within = sum(abs(r - 1) <= TOLERANCE for r in ratios + duty_ratios)
    print(f"\n{within} of {len(ratios) + len(duty_ratios)} ratios within {TOLERANCE:.0%} of 1")
    over = [r for r in ratios if r > 1 + TOLERANCE]
    missed = [r for r in duty_ratios if abs(r - 1) > TOLERANCE]
    return 0 if not over and not missed else 1


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.caps")
    parser.add_argument("--steps", type=int, default=24, help="steps per measured round")
    parser.add_argument("--priority", choices=("normal", "low", "idle"), default="normal")
    parser.add_argument(
        "--preset", choices=("tiny", "default", "large"), default="default", help="thread caps"
    )
    args = parser.parse_args(argv)
    return asyncio.run(run(args.steps, args.priority, args.preset))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
