"""Parent side of the training worker: `ProcessTrainer` implements `core.steps.Trainer`.

Torch never loads in this (the GUI's) process: training runs in a spawned child that is
kept alive between rounds (spawning and importing torch costs 1–2 s). A reader thread
turns the child's pipe frames into asyncio queue items, so the event loop never blocks.
The watchdog treats a closed pipe (crash) or missing heartbeats (hang) as a lost worker:
it is killed, a fresh one is spawned, and the round resumes from its last checkpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import multiprocessing as mp
import threading
import uuid
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from r3mes_desktop.adapters.mining.checkpoint import CheckpointStore, validate_transaction_id
from r3mes_desktop.adapters.mining.lifeline import Lifeline, exit_with_owner
from r3mes_desktop.adapters.mining.presets import TrainPlan, make_plan
from r3mes_desktop.adapters.mining.settings import MiningConfig
from r3mes_desktop.adapters.mining.throttle import MIN_DUTY
from r3mes_desktop.core import workproof
from r3mes_desktop.core.clock import Clock, SystemClock
from r3mes_desktop.core.errors import (
    AuthenticationError,
    NetworkError,
    PermanentError,
    R3mesError,
    ResourceError,
    ValidationError,
)
from r3mes_desktop.core.events import EventBus, Notice
from r3mes_desktop.core.steps import ProgressCallback, RoundSpec, TrainingResult

log = logging.getLogger(__name__)

_ERROR_CLASSES: dict[str, type[R3mesError]] = {
    "resource": ResourceError,
    "validation": ValidationError,
    "permanent": PermanentError,
    "network": NetworkError,
    "authentication": AuthenticationError,
}
STARTUP_TIMEOUT_S = 120.0
PROCESS_SETTINGS = ("device", "num_threads", "heartbeat_interval_s", "priority", "vram_cap_mb")
"""Settings fixed when the worker process starts; changing one restarts it between rounds."""
JOB_SETTINGS = (
    "checkpoint_interval",
    "keep_checkpoints",
    "min_free_disk_mb",
    "max_gradient_size_mb",
    "memory_budget_mb",
)
"""Settings sent with every round; the rest (device, threads, heartbeat) fix the process."""


class MiningStopped(ResourceError):
    """Training was stopped by the user; the round resumes from its checkpoint on restart."""


class _WorkerLost(Exception):
    """The child died or stopped sending heartbeats."""


def _child_entry(conn: Connection, config_json: str, lifeline: Connection | None = None) -> None:
    """Spawn target: lowers its own CPU priority first (`process_priority`, before torch
    starts its threads, which inherit it), then imports the torch side only inside the
    child (which exits as soon as this process is gone, even in the middle of a step)."""
    from r3mes_desktop.adapters.mining.priority import apply_priority

    priority = apply_priority(str(json.loads(config_json).get("priority", "normal")))
    exit_with_owner(lifeline)
    from r3mes_desktop.adapters.mining.worker_child import child_main

    child_main(conn, config_json, priority)


def plan_for(spec: RoundSpec, config: MiningConfig, miner: str | None = None) -> TrainPlan:
    """The round's validated plan, refusing early an update bigger than the size limit.

    With `miner`, the plan is that miner's assignment (`core.workproof`): its own data and
    starting adapters. Without, the round's seed itself (benchmarks of the training loop)."""
    seed = spec.seed
    if miner is not None:
        seed = workproof.training_seed(workproof.assignment(spec.seed, miner, spec.round_id))
    plan = make_plan(
        round_id=spec.round_id,
        seed=seed,
        adapter_sha256=spec.model_sha256,
        base_model_id=spec.base_model_id,
        steps=spec.steps,
        hyperparams=spec.hyperparams,
        default_preset=config.preset,
    )
    size = plan.update_size_bytes()
    if size > config.max_gradient_size_mb * 2**20:
        raise ValidationError(
            f"the round's update would be {size / 2**20:.2f} MB, over max_gradient_size_mb="
            f"{config.max_gradient_size_mb:g} (R3MES_MAX_GRADIENT_SIZE_MB); lower lora_rank"
        )
    return plan


class _Worker:
    """One child process, its pipe, and the thread that feeds its frames to the loop."""

    def __init__(
        self,
        process: BaseProcess,
        conn: Connection,
        loop: asyncio.AbstractEventLoop,
        lifeline: Lifeline | None = None,
    ):
        self.process = process
        self.conn = conn
        self.lifeline = lifeline
        self.loop = loop
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.last_seen = 0.0
        self.thread = threading.Thread(target=self._read, name="r3mes-trainer-reader", daemon=True)
        self.thread.start()

    def _post(self, msg: dict[str, Any]) -> None:
        with contextlib.suppress(RuntimeError):  # loop closed at shutdown
            self.loop.call_soon_threadsafe(self.queue.put_nowait, msg)

    def _read(self) -> None:
        while True:
            try:
                msg = json.loads(self.conn.recv_bytes())
                if msg.get("type") == "result":
                    msg["_data"] = self.conn.recv_bytes()
            except (EOFError, OSError, ValueError):
                self._post({"type": "_dead"})
                return
            self._post(msg)

    def send(self, msg: dict[str, Any]) -> bool:
        try:
            self.conn.send_bytes(json.dumps(msg).encode())
            return True
        except (OSError, ValueError):
            return False

    def cut_lifeline(self) -> None:
        if self.lifeline is not None:
            self.lifeline.cut()

    @property
    def pid(self) -> int | None:
        return self.process.pid


class ProcessTrainer:
    """Trains rounds in a long-lived worker process; pause / resume / stop / finish-then-stop."""

    def __init__(
        self,
        config: MiningConfig | None = None,
        *,
        checkpoint_root: Path,
        bus: EventBus | None = None,
        clock: Clock | None = None,
        miner: str | None = None,
        trace_root: Path | None = None,
    ) -> None:
        """`miner`: the address whose assignment this trainer trains; its runs commit their
        states under `trace_root` (default: beside the checkpoints) and return bound update
        packages that validators can check. Without it, plain updates of the round's seed."""
        self.config = config or MiningConfig()
        self.miner = miner
        root = Path(checkpoint_root)
        self.trace_root = trace_root or root.with_name(root.name + "-traces")
        self.checkpoints = CheckpointStore(
            Path(checkpoint_root),
            keep=self.config.keep_checkpoints,
            min_free_bytes=int(self.config.min_free_disk_mb * 2**20),
        )
        self.bus = bus
        self.clock = clock or SystemClock()
        self._worker: _Worker | None = None
        self._lock = asyncio.Lock()
        self._spawning = asyncio.Lock()  # a warm-up and a first round share one worker
        self._job: str | None = None
        self._paused = False
        self._stopped = False
        self._finish_then_stop = False
        self._background: set[asyncio.Task[None]] = set()
        self._duty = 1.0
        self.restarts = 0
        self.worker_priority = ""  # what the worker did about `config.priority`, in words

    def reconfigure(self, config: MiningConfig) -> None:
        """Apply new settings: per-round ones from the next round on; device, threads and
        heartbeat when the worker next (re)starts."""
        restart = any(getattr(config, k) != getattr(self.config, k) for k in PROCESS_SETTINGS)
        self.config = config
        self.checkpoints = CheckpointStore(
            self.checkpoints.root,
            keep=config.keep_checkpoints,
            min_free_bytes=int(config.min_free_disk_mb * 2**20),
        )
        if restart and self._worker is not None and self._job is None:
            worker, self._worker = self._worker, None
            worker.send({"type": "shutdown"})
            threading.Thread(target=worker.process.join, args=(30,), daemon=True).start()

    # -- controls (called from the GUI/coordinator on the loop thread) --------------------
    @property
    def worker_pid(self) -> int | None:
        return self._worker.pid if self._worker else None

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def stopped(self) -> bool:
        return self._stopped

    @property
    def training(self) -> bool:
        """A round is being trained now (the power throttle only learns from those)."""
        return self._job is not None and not self._paused

    @property
    def duty(self) -> float:
        return self._duty

    def set_duty(self, fraction: float) -> None:
        """Train only `fraction` (0.05–1.0) of the time: after each step the worker sleeps
        so that step time / (step time + sleep) = fraction (the power throttle's lever;
        1.0 = no sleep). Applies from the next step, and to later rounds and workers."""
        if isinstance(fraction, bool) or not MIN_DUTY <= float(fraction) <= 1.0:
            raise ValidationError(f"duty must be in {MIN_DUTY:g}..1, got {fraction!r}")
        self._duty = float(fraction)
        if self._worker is not None:
            self._worker.send({"type": "duty", "duty": self._duty})

    def pause(self) -> None:
        self._paused = True
        if self._worker and self._job:
            self._worker.send({"type": "pause"})

    def resume(self) -> None:
        self._paused = False
        if self._worker and self._job:
            self._worker.send({"type": "resume"})

    def stop(self) -> None:
        """Checkpoint and stop the current round now; later rounds wait for `start()`."""
        self._stopped = True
        if self._worker and self._job:
            self._worker.send({"type": "stop"})

    def finish_then_stop(self) -> None:
        """Let the current round finish, then stop mining and release the worker."""
        self._finish_then_stop = True

    async def start(self) -> None:
        """(Re)enable mining and warm the worker up (torch import) before the first round."""
        self._stopped = False
        self._finish_then_stop = False
        await self._ensure_worker()

    # -- worker lifecycle ---------------------------------------------------------------
    def _spawn(self, loop: asyncio.AbstractEventLoop) -> _Worker:
        ctx = mp.get_context("spawn")
        parent_conn, child_conn = ctx.Pipe(duplex=True)
        lifeline = Lifeline(ctx)
        config_json = json.dumps(self.config.to_json())
        process = ctx.Process(
            target=_child_entry,
            args=(child_conn, config_json, lifeline.child_end),
            name="r3mes-trainer",
            daemon=True,
        )
        process.start()
        child_conn.close()
        lifeline.handed_over()
        return _Worker(process, parent_conn, loop, lifeline)

    async def _ensure_worker(self) -> _Worker:
        async with self._spawning:
            return await self._ensure_worker_now()

    async def _ensure_worker_now(self) -> _Worker:
        if self._worker is not None and self._worker.process.is_alive():
            return self._worker
        if self._worker is not None:
            await self._discard(self._worker)
        loop = asyncio.get_running_loop()
        worker = await loop.run_in_executor(None, self._spawn, loop)
        try:
            async with asyncio.timeout(STARTUP_TIMEOUT_S):
                msg = await worker.queue.get()
        except TimeoutError:
            msg = {"type": "timeout"}
        if msg.get("type") != "ready":
            await self._discard(worker)
            raise ResourceError(f"the training worker failed to start ({msg.get('type')})")
        worker.last_seen = self.clock.monotonic()
        self.worker_priority = str(msg.get("priority", ""))
        log.info("training worker %s started (%s)", msg.get("pid"), self.worker_priority)
        self._worker = worker
        return worker

    async def _discard(self, worker: _Worker) -> None:
        """Kill a lost worker without blocking the loop."""
        if self._worker is worker:
            self._worker = None

        def reap() -> None:
            if worker.process.is_alive():
                worker.process.kill()
            worker.process.join(10)
            worker.conn.close()
            worker.cut_lifeline()

        await asyncio.get_running_loop().run_in_executor(None, reap)

    async def shutdown(self) -> None:
        """Ask the worker to exit (it finishes nothing new) and reap it off the loop."""
        worker, self._worker = self._worker, None
        if worker is None:
            return
        worker.send({"type": "stop"})
        worker.send({"type": "shutdown"})

        def reap() -> None:
            worker.process.join(10)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(5)
            worker.conn.close()
            worker.cut_lifeline()

        await asyncio.get_running_loop().run_in_executor(None, reap)

    # -- Trainer protocol -----------------------------------------------------------------
    async def discard_checkpoints(self, transaction_id: str) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.checkpoints.delete, transaction_id)

    async def train(
        self,
        *,
        transaction_id: str,
        spec: RoundSpec,
        progress: ProgressCallback,
        adapter_path: str | None = None,
        dataset_path: str | None = None,
    ) -> TrainingResult:
        plan = plan_for(spec, self.config, self.miner)
        validate_transaction_id(transaction_id)
        async with self._lock:
            restarts = 0
            while True:
                if self._stopped:
                    raise MiningStopped("mining is stopped; start it again to resume this round")
                worker = await self._ensure_worker()
                job = self._start_job(
                    worker, transaction_id, plan, spec, adapter_path, dataset_path
                )
                try:
                    result = await self._pump(worker, job, transaction_id, progress)
                except _WorkerLost as lost:
                    restarts += 1
                    await self._worker_lost(worker, lost, restarts, transaction_id)
                    continue
                except asyncio.CancelledError:
                    worker.send({"type": "stop"})
                    raise
                finally:
                    self._job = None
                if self._finish_then_stop:
                    self._stop_after_round()
                return _training_result(result, restarts)

    def _start_job(
        self,
        worker: _Worker,
        transaction_id: str,
        plan: TrainPlan,
        spec: RoundSpec,
        adapter_path: str | None = None,
        dataset_path: str | None = None,
    ) -> str:
        """Send the child one training job (paused at once if mining is paused); the job id
        returned tells this job's frames from a stale one's."""
        job = uuid.uuid4().hex
        self._job = job
        worker.last_seen = self.clock.monotonic()
        worker.send(
            {
                "type": "train",
                "job": job,
                "transaction_id": transaction_id,
                "plan": plan.to_json(),
                "checkpoint_root": str(self.checkpoints.root),
                "settings": {k: getattr(self.config, k) for k in JOB_SETTINGS},
                "trace": self._trace_spec(transaction_id, spec),
                "adapter_path": adapter_path,
                "dataset_path": dataset_path,
                "duty": self._duty,
            }
        )
        if self._paused:
            worker.send({"type": "pause"})
        return job

    def _trace_spec(self, transaction_id: str, spec: RoundSpec) -> dict[str, Any] | None:
        if self.miner is None:
            return None
        bound = workproof.assignment(spec.seed, self.miner, spec.round_id)
        return {
            "dir": str(self.trace_root / transaction_id),
            "miner": self.miner,
            "assignment": bound.hex(),
            "segment_steps": workproof.SEGMENT_STEPS,
        }

    async def _worker_lost(
        self, worker: _Worker, lost: _WorkerLost, restarts: int, transaction_id: str
    ) -> None:
        """Discard a lost child so the next try starts a fresh one from the last checkpoint;
        past `max_restarts` the round is given up instead of looping on a broken worker."""
        self.restarts += 1
        await self._discard(worker)
        if restarts > self.config.max_restarts:
            raise ResourceError(
                f"the training worker {lost} {restarts} times; giving up this round "
                "(its checkpoints are kept)"
            ) from None
        self._notice(
            "warning",
            f"training worker {lost}; restarted it, resuming from the last checkpoint",
            transaction_id,
        )

    def _stop_after_round(self) -> None:
        """Honour "finish this round, then stop": shut the child down in the background so
        the finished round's result is returned without waiting for the reap."""
        self._stopped = True
        self._finish_then_stop = False
        task = asyncio.get_running_loop().create_task(self.shutdown())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _pump(
        self, worker: _Worker, job: str, transaction_id: str, progress: ProgressCallback
    ) -> dict[str, Any]:
        """Relay the child's frames until the round's result; raise on errors and losses."""
        timeout = self.config.watchdog_timeout_s
        poll = min(self.config.heartbeat_interval_s, timeout / 4)
        while True:
            try:
                # Not asyncio.wait_for: on 3.11 it swallows a cancel that lands together
                # with a frame, and Stop/SIGTERM then let the round train on to the end.
                async with asyncio.timeout(poll):
                    msg = await worker.queue.get()
            except TimeoutError:
                silent = self.clock.monotonic() - worker.last_seen
                if silent > timeout:
                    raise _WorkerLost(f"sent no heartbeat for {silent:.1f} s (hung)") from None
                continue
            kind = msg.get("type")
            if kind == "_dead":
                code = worker.process.exitcode
                raise _WorkerLost(f"exited unexpectedly (exit code {code})")
            worker.last_seen = self.clock.monotonic()
            if msg.get("job") != job:
                continue  # a late frame of an earlier, abandoned job
            if kind == "progress":
                detail = {k: msg[k] for k in ("step", "steps", "loss", "tokens_per_s", "device")}
                detail["micro_batch"] = msg["micro_batch"]
                try:
                    progress(msg["step"] / msg["steps"], detail)
                except Exception:
                    log.exception("training progress callback failed")
            elif kind == "paused":
                self._notice("info", "mining paused (checkpoint saved)", transaction_id)
            elif kind == "resumed":
                self._notice("info", "mining resumed", transaction_id)
            elif kind == "warning":
                self._notice("warning", str(msg.get("message", "")), transaction_id)
            elif kind == "stopped":
                raise MiningStopped(
                    f"training stopped at step {msg['step']}; the round resumes from there"
                )
            elif kind == "error":
                cls = _ERROR_CLASSES.get(msg["category"], R3mesError)
                if cls is ResourceError:
                    self._notice("warning", f"mining paused: {msg['message']}", transaction_id)
                raise cls(msg["message"])
            elif kind == "result":
                return msg

    def _notice(self, level: str, message: str, transaction_id: str | None) -> None:
        log.log(logging.WARNING if level != "info" else logging.INFO, "%s", message)
        if self.bus is not None:
            self.bus.publish(
                Notice(level=level, message=message, transaction_id=transaction_id, source="mining")
            )


def _training_result(result: dict[str, Any], restarts: int) -> TrainingResult:
    """The child's result frame as a TrainingResult; the gradient hash is computed here, on
    the bytes that will be uploaded, not taken from the child."""
    return TrainingResult(
        data=result["_data"],
        gradient_hash=hashlib.sha256(result["_data"]).digest(),
        tokens=int(result["tokens"]),
        final_loss=float(result["final_loss"]),
        metrics={
            "micro_batch": float(result["micro_batch"]),
            "oom_retries": float(result["oom_retries"]),
            "worker_restarts": float(restarts),
            "threads": float(result.get("threads", 0)),
            # Where the child's time went (setup, steps, blocking checkpoint
            # capture, overlapped checkpoint writes, whole job): bench.training.
            **{f"time_{k}": float(v) for k, v in result.get("timing", {}).items()},
        },
    )
