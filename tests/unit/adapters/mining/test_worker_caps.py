"""The training worker's caps: its priority, the duty cycle (power throttle), the VRAM cap
(no effect on the CPU) and the memory budget's error."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from r3mes_desktop.adapters.mining.settings import MiningConfig
from r3mes_desktop.adapters.mining.worker import ProcessTrainer
from r3mes_desktop.core.errors import ResourceError, ValidationError
from r3mes_desktop.core.events import EventBus
from r3mes_desktop.core.steps import RoundSpec

ASYNC = pytest.mark.asyncio(loop_scope="module")

CONFIG = MiningConfig(
    device="cpu",
    preset="tiny",
    num_threads=1,
    checkpoint_interval=1000,
    heartbeat_interval_s=0.1,
    watchdog_timeout_s=5.0,
    min_free_disk_mb=0,
    priority="low",
)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def trainer(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ProcessTrainer]:
    trainer = ProcessTrainer(
        CONFIG, checkpoint_root=tmp_path_factory.mktemp("ckpt"), bus=EventBus()
    )
    try:
        yield trainer
    finally:
        await trainer.shutdown()


def spec(round_id: int, steps: int, preset: str) -> RoundSpec:
    return RoundSpec(
        round_id=round_id,
        seed=round_id,
        difficulty=16,
        base_model_id="m",
        steps=steps,
        hyperparams={"preset": preset},
    )


async def train(
    trainer: ProcessTrainer, round_id: int, steps: int, preset: str = "tiny"
) -> dict[str, float]:
    result = await trainer.train(
        transaction_id=f"tx-caps-{round_id}",
        spec=spec(round_id, steps, preset),
        progress=lambda _f, _d: None,
    )
    return result.metrics


def share(metrics: dict[str, float]) -> float:
    """The share of the training loop's time (first step to last) spent in steps."""
    return metrics["time_steps_s"] / metrics["time_loop_s"]


@ASYNC
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
async def test_the_worker_and_every_thread_of_it_run_at_the_configured_priority(
    trainer: ProcessTrainer,
) -> None:
    import os

    from r3mes_desktop.adapters.mining.priority import current_priority

    await trainer.start()
    pid = trainer.worker_pid
    assert pid is not None
    tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    assert all(current_priority(tid)[0] == 10 for tid in tids)
    assert trainer.worker_priority.startswith("nice 10")


@ASYNC
@pytest.mark.parametrize("duty", [0.5, 0.25])
async def test_the_share_of_time_training_follows_the_duty(
    trainer: ProcessTrainer, duty: float
) -> None:
    """Default-preset steps (tens of ms each): the step is most of the busy time."""
    trainer.set_duty(1.0)
    full = await train(trainer, int(duty * 100), 12, "default")
    trainer.set_duty(duty)
    try:
        throttled = await train(trainer, int(duty * 100) + 1, 12, "default")
    finally:
        trainer.set_duty(1.0)
    assert share(full) > 0.9
    assert full["time_throttle_s"] == 0.0
    measured = share(throttled)
    print(f"duty {duty}: training share {measured:.3f} (full speed {share(full):.3f})")
    assert abs(measured / duty - 1) <= 0.10, (duty, measured, throttled)


@ASYNC
async def test_a_pause_during_the_throttle_sleep_is_handled_at_once(
    trainer: ProcessTrainer,
) -> None:
    """At 5 % a default-preset step (tens of ms) is followed by 19 times as long a sleep
    (over a second); a pause must not wait it out."""
    import asyncio
    import time

    paused = asyncio.Event()
    paused_at: list[float] = []

    def on_event(event: object) -> None:
        if "paused" in getattr(event, "message", ""):
            paused_at.append(time.monotonic())
            paused.set()

    assert trainer.bus is not None
    unsubscribe = trainer.bus.subscribe(on_event)
    await trainer.start()  # the worker is up: the round's steps start at once
    trainer.set_duty(0.05)
    try:
        round_ = asyncio.ensure_future(train(trainer, 43, 60, "default"))
        await asyncio.sleep(2.5)
        asked = time.monotonic()
        trainer.pause()
        await asyncio.wait_for(paused.wait(), 10)
        trainer.set_duty(1.0)  # learnt while paused
        trainer.resume()
        metrics = await asyncio.wait_for(round_, 120)
    finally:
        unsubscribe()
        trainer.set_duty(1.0)
    assert paused_at[0] - asked < 0.5
    assert metrics["time_throttle_s"] > 1.0  # it was in the long sleeps


def test_set_duty_rejects_fractions_out_of_range() -> None:
    trainer = ProcessTrainer(CONFIG, checkpoint_root=__import__("pathlib").Path("/nonexistent"))
    for bad in (0.0, 0.049, 1.01, True):
        with pytest.raises(ValidationError, match="duty"):
            trainer.set_duty(bad)  # type: ignore[arg-type]
    trainer.set_duty(0.05)
    assert trainer.duty == 0.05


def test_a_vram_cap_has_no_effect_and_no_error_on_the_cpu() -> None:
    import torch

    from r3mes_desktop.adapters.mining.settings import vram_fraction
    from r3mes_desktop.adapters.mining.training import apply_vram_cap

    assert apply_vram_cap(torch.device("cpu"), 4096) is None
    gib = 2**30
    assert vram_fraction(8192, 80 * gib) == pytest.approx(0.1)
    assert vram_fraction(4096, 141 * gib) == pytest.approx(4096 / (141 * 1024))
    assert vram_fraction(200_000, 80 * gib) == 1.0  # over the device: no cap
    assert vram_fraction(0, 80 * gib) == 1.0
    with pytest.raises(ValidationError):
        vram_fraction(1024, 0)


def test_a_vram_cap_sets_the_fraction_of_the_device_on_cuda(monkeypatch: Any) -> None:
    """The torch calls made for a CUDA device (mocked: this test runs anywhere)."""
    import torch

    from r3mes_desktop.adapters.mining import training

    calls: list[tuple[float, Any]] = []

    class Props:
        total_memory = 80 * 2**30

    monkeypatch.setattr(training.torch.cuda, "get_device_properties", lambda _d: Props())
    monkeypatch.setattr(
        training.torch.cuda,
        "set_per_process_memory_fraction",
        lambda fraction, device: calls.append((fraction, device)),
    )
    device = torch.device("cuda:1")
    assert training.apply_vram_cap(device, 20480) == pytest.approx(0.25)
    assert calls == [(pytest.approx(0.25), device)]
    assert training.apply_vram_cap(device, 0) is None
    assert len(calls) == 1


def test_a_memory_budget_too_small_for_one_sample_names_the_setting() -> None:
    import torch

    from r3mes_desktop.adapters.mining.presets import make_plan
    from r3mes_desktop.adapters.mining.training import RoundTraining

    plan = make_plan(round_id=1, seed=1, base_model_id="m", steps=2, hyperparams={"preset": "tiny"})
    run = RoundTraining(plan, device=torch.device("cpu"), memory_budget_mb=0.01)
    with pytest.raises(ResourceError, match="memory_budget_mb") as caught:
        run.train_step()
    assert "micro-batch 1" in str(caught.value) and "= 0.01 MB" in str(caught.value)


@ASYNC
async def test_a_bound_round_whose_micro_batch_shrinks_lists_it_for_validators(
    trainer: ProcessTrainer,
) -> None:
    import dataclasses

    import torch

    from r3mes_desktop.adapters.mining.training import RoundTraining
    from r3mes_desktop.adapters.mining.worker import plan_for
    from r3mes_desktop.core.events import Notice

    miner = "0x" + "42" * 20
    round_spec = spec(50, 3, "tiny")
    probe = RoundTraining(plan_for(round_spec, CONFIG, miner), device=torch.device("cpu"))
    budget = (probe.estimated_bytes(4) + 1) / 2**20  # 8 → 4 at step 0
    warnings: list[str] = []
    assert trainer.bus is not None
    unsubscribe = trainer.bus.subscribe(
        lambda e: (
            warnings.append(e.message) if isinstance(e, Notice) and e.level == "warning" else None
        )
    )
    trainer.miner = miner
    trainer.reconfigure(dataclasses.replace(CONFIG, memory_budget_mb=budget))
    try:
        result = await trainer.train(
            transaction_id="tx-caps-50", spec=round_spec, progress=lambda _f, _d: None
        )
    finally:
        unsubscribe()
        trainer.miner = None
        trainer.reconfigure(CONFIG)
    from r3mes_desktop.adapters.mining.commitments import read_package

    assert result.metrics["micro_batch"] == 4.0
    _, manifest = read_package(result.data)
    assert manifest is not None and manifest.shrinks == ((0, 4),)  # validators replay it
    assert warnings == []


@ASYNC
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SCHED_IDLE is Linux's")
async def test_a_new_priority_restarts_the_idle_worker_at_it(trainer: ProcessTrainer) -> None:
    """Priority and the VRAM cap are fixed when the worker starts (raising a priority back
    needs privileges): a change replaces a worker that has no round."""
    import dataclasses

    from r3mes_desktop.adapters.mining.priority import current_priority

    await trainer.start()
    before = trainer.worker_pid
    trainer.reconfigure(dataclasses.replace(CONFIG, priority="idle"))
    try:
        await trainer.start()
        after = trainer.worker_pid
        assert after is not None and after != before
        assert current_priority(after) == (19, "idle")
        assert trainer.worker_priority.startswith("SCHED_IDLE, nice 19")
    finally:
        trainer.reconfigure(CONFIG)
