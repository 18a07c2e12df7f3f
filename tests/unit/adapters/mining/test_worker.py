"""The worker process: results, resume in a new process, crash/hang recovery, controls."""

from __future__ import annotations

import dataclasses
import os
import signal
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from r3mes_desktop.adapters.mining.settings import MiningConfig
from r3mes_desktop.adapters.mining.worker import MiningStopped, ProcessTrainer, plan_for
from r3mes_desktop.core.errors import ResourceError
from r3mes_desktop.core.events import EventBus, Notice
from r3mes_desktop.core.steps import RoundSpec

pytestmark = pytest.mark.asyncio(loop_scope="module")

CONFIG = MiningConfig(
    device="cpu",
    preset="tiny",
    num_threads=1,
    checkpoint_interval=4,
    keep_checkpoints=2,
    heartbeat_interval_s=0.1,
    watchdog_timeout_s=1.5,
    min_free_disk_mb=0,
)
LONG = RoundSpec(round_id=3, seed=21, difficulty=16, base_model_id="m", steps=120)
SHORT = RoundSpec(round_id=4, seed=22, difficulty=16, base_model_id="m", steps=20)
_REFERENCE: dict[tuple[int, int, int], bytes] = {}


def reference_hash(spec: RoundSpec) -> bytes:
    """The uninterrupted in-process result the worker must reproduce bit for bit."""
    key = (spec.round_id, spec.seed, spec.steps)
    if key not in _REFERENCE:
        from r3mes_desktop.adapters.mining.training import train_round

        _REFERENCE[key] = train_round(plan_for(spec, CONFIG), num_threads=1).gradient_hash
    return _REFERENCE[key]


class Recorder:
    def __init__(self) -> None:
        self.steps: list[int] = []
        self.details: list[dict[str, Any]] = []
        self.notices: list[str] = []

    def progress(self, fraction: float, detail: Any) -> None:
        assert 0.0 < fraction <= 1.0
        self.steps.append(detail["step"])
        self.details.append(dict(detail))

    def on_event(self, event: Any) -> None:
        if isinstance(event, Notice):
            self.notices.append(event.message)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def shared(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ProcessTrainer]:
    """One trainer (one worker process, restarted only by the crash tests) for the module:
    spawning a worker and importing torch costs seconds."""
    trainer = ProcessTrainer(
        CONFIG, checkpoint_root=tmp_path_factory.mktemp("ckpt"), bus=EventBus()
    )
    try:
        yield trainer
    finally:
        await trainer.shutdown()


@pytest_asyncio.fixture(loop_scope="module")
async def trainer(shared: ProcessTrainer) -> AsyncIterator[tuple[ProcessTrainer, Recorder]]:
    rec = Recorder()
    assert shared.bus is not None
    unsubscribe = shared.bus.subscribe(rec.on_event)
    shared.reconfigure(CONFIG)
    await shared.start()
    try:
        yield shared, rec
    finally:
        unsubscribe()


async def test_resume_in_a_new_process_gives_the_same_hash(
    trainer: tuple[ProcessTrainer, Recorder],
) -> None:
    from r3mes_desktop.adapters.mining.training import (
        RoundTraining,
        configure_determinism,
        resolve_device,
    )

    t, rec = trainer
    configure_determinism(1)
    partial = RoundTraining(plan_for(SHORT, CONFIG), device=resolve_device("cpu"))
    for _ in range(10):
        partial.train_step()
    arrays, state = partial.checkpoint_state()
    t.checkpoints.save("tx-resume", round_id=4, step=10, tensors=arrays, state=state)

    result = await t.train(transaction_id="tx-resume", spec=SHORT, progress=rec.progress)
    assert rec.steps[0] == 11 and rec.steps[-1] == 20  # continued, did not restart
    assert result.gradient_hash == reference_hash(SHORT)
    assert result.tokens == 20 * 8 * 16
    assert rec.details[-1]["device"] == "cpu" and rec.details[-1]["tokens_per_s"] > 0
    assert [c.step for c in t.checkpoints.list("tx-resume")] == [20, 16]
    await t.discard_checkpoints("tx-resume")
    assert t.checkpoints.list("tx-resume") == []


async def test_killed_worker_is_restarted_and_round_continues(
    trainer: tuple[ProcessTrainer, Recorder],
) -> None:
    t, rec = trainer
    killed: list[int] = []

    def progress(fraction: float, detail: Any) -> None:
        rec.progress(fraction, detail)
        if detail["step"] >= 2 and not killed and t.worker_pid:
            killed.append(t.worker_pid)
            os.kill(t.worker_pid, signal.SIGKILL)

    result = await t.train(transaction_id="tx-crash", spec=LONG, progress=progress)
    assert killed and t.worker_pid != killed[0]
    assert result.metrics["worker_restarts"] == 1
    assert any("exited unexpectedly" in n for n in rec.notices)
    assert result.gradient_hash == reference_hash(LONG)


@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs POSIX job-control signals")
async def test_hung_worker_is_detected_by_the_watchdog(
    trainer: tuple[ProcessTrainer, Recorder],
) -> None:
    t, rec = trainer
    frozen: list[int] = []

    def progress(fraction: float, detail: Any) -> None:
        rec.progress(fraction, detail)
        if detail["step"] >= 2 and not frozen and t.worker_pid:
            frozen.append(t.worker_pid)
            os.kill(t.worker_pid, signal.SIGSTOP)

    result = await t.train(transaction_id="tx-hang", spec=LONG, progress=progress)
    assert frozen and result.metrics["worker_restarts"] == 1
    assert any("no heartbeat" in n and "hung" in n for n in rec.notices)
    assert result.gradient_hash == reference_hash(LONG)


async def test_low_disk_space_pauses_with_a_notice(
    trainer: tuple[ProcessTrainer, Recorder],
) -> None:
    t, rec = trainer
    t.reconfigure(dataclasses.replace(CONFIG, min_free_disk_mb=10_000_000))
    pid = t.worker_pid
    with pytest.raises(ResourceError, match="low disk space"):
        await t.train(transaction_id="tx-disk", spec=SHORT, progress=rec.progress)
    assert any(n.startswith("mining paused: low disk space") for n in rec.notices)
    assert t.checkpoints.list("tx-disk") == []
    assert t.worker_pid == pid  # the worker survives and serves the next round


async def test_pause_resume_stop_and_finish_then_stop(
    trainer: tuple[ProcessTrainer, Recorder],
) -> None:
    t, rec = trainer
    pid = t.worker_pid

    def pause_once(fraction: float, detail: Any) -> None:
        rec.progress(fraction, detail)
        if detail["step"] == 2:
            t.pause()

    def on_notice(event: Any) -> None:
        if isinstance(event, Notice) and event.message.startswith("mining paused"):
            paused_at.append(max(c.step for c in t.checkpoints.list("tx-pause")))
            t.resume()

    paused_at: list[int] = []
    assert t.bus is not None
    t.bus.subscribe(on_notice)
    result = await t.train(transaction_id="tx-pause", spec=LONG, progress=pause_once)
    assert paused_at and paused_at[0] >= 2  # pausing saved a checkpoint
    assert "mining resumed" in rec.notices
    assert result.gradient_hash == reference_hash(LONG)

    def stop_once(fraction: float, detail: Any) -> None:
        if detail["step"] == 2:
            t.stop()

    with pytest.raises(MiningStopped):
        await t.train(transaction_id="tx-stop", spec=LONG, progress=stop_once)
    stopped_at = t.checkpoints.list("tx-stop")[0].step
    assert stopped_at >= 2 and t.stopped
    with pytest.raises(MiningStopped):
        await t.train(transaction_id="tx-stop", spec=LONG, progress=rec.progress)
    await t.start()
    rec.steps.clear()
    t.finish_then_stop()
    result = await t.train(transaction_id="tx-stop", spec=LONG, progress=rec.progress)
    assert rec.steps[0] == stopped_at + 1
    assert result.gradient_hash == reference_hash(LONG)
    assert t.worker_pid in (pid, None) and t.stopped  # same worker all along, now released
    with pytest.raises(MiningStopped):
        await t.train(transaction_id="tx-next", spec=SHORT, progress=rec.progress)


async def test_a_cancel_landing_with_a_frame_is_not_swallowed(tmp_path: Any) -> None:
    """Stop/SIGTERM cancel the round while the child streams progress. On 3.11,
    asyncio.wait_for returned the frame and dropped such a cancel, so the round trained on
    to the end and committed after Stop (CI failed twice on it). Here the frame and the
    cancel land in the same loop iteration, deterministically."""
    import asyncio
    from types import SimpleNamespace

    pool = ProcessTrainer(CONFIG, checkpoint_root=tmp_path)
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    worker = SimpleNamespace(queue=queue, last_seen=pool.clock.monotonic(), process=None)
    seen: list[float] = []
    pump = asyncio.create_task(
        pool._pump(worker, "job", "tx", lambda fraction, _detail: seen.append(fraction))  # type: ignore[arg-type]
    )
    for _ in range(5):  # let the pump reach its wait for the next frame
        await asyncio.sleep(0)
    frame = {"type": "progress", "job": "job", "step": 1, "steps": 4, "loss": 1.0}
    queue.put_nowait({**frame, "tokens_per_s": 1.0, "device": "cpu", "micro_batch": 1})
    pump.cancel()
    done, _ = await asyncio.wait({pump}, timeout=5)
    assert done, "the pump ignored the cancel and kept waiting for frames"
    assert pump.cancelled()
    assert seen == []  # the frame was not consumed by a pump that should have stopped
    assert queue.qsize() == 1
