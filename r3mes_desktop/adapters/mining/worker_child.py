"""The training worker process: the only place torch runs.

Talks to the parent over a multiprocessing pipe with JSON frames (`send_bytes`, never the
pickling `send`); the update bytes follow a "result" frame as one raw frame. Between steps
it polls for pause/resume/stop; it sends a heartbeat at least every `heartbeat_interval_s`
(also between micro-batches and while paused), which the parent's watchdog relies on.

Periodic checkpoints are captured between steps (a copy of the state, the only part that
must stop training) and written by a background thread while the next steps run: the
safetensors encoding, checksum and fsyncs then overlap training instead of adding to it.
One write is in flight at most; pause, stop and the end of a round wait for it, so the
parent never sees "paused" or a result before the checkpoint is on disk.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from r3mes_desktop.adapters.mining import commitments
from r3mes_desktop.adapters.mining.checkpoint import CheckpointStore
from r3mes_desktop.adapters.mining.presets import TrainPlan
from r3mes_desktop.adapters.mining.settings import MiningConfig
from r3mes_desktop.core.errors import R3mesError, classify, to_r3mes_error


class _Stop(Exception):
    """The parent asked to stop; the current state is checkpointed."""


class BackgroundSaver:
    """Writes captured checkpoints on a thread; errors surface in the training thread."""

    def __init__(self, store: CheckpointStore, transaction_id: str, round_id: int) -> None:
        self.store = store
        self.transaction_id = transaction_id
        self.round_id = round_id
        self.write_s = 0.0  # spent writing, overlapped with training
        self._thread: threading.Thread | None = None
        self._step = 0
        self._error: BaseException | None = None

    def submit(self, step: int, arrays: dict[str, Any], state: dict[str, Any]) -> int | None:
        """Start writing this checkpoint; returns the step of the previous one if it had
        to be waited for (it is now on disk)."""
        done = self.wait()
        self._step = step
        self._thread = threading.Thread(
            target=self._write, args=(step, arrays, state), name="r3mes-ckpt", daemon=True
        )
        self._thread.start()
        return done

    def _write(self, step: int, arrays: dict[str, Any], state: dict[str, Any]) -> None:
        started = time.perf_counter()
        try:
            self.store.save(
                self.transaction_id, round_id=self.round_id, step=step, tensors=arrays, state=state
            )
        except BaseException as exc:  # re-raised in the training thread by wait()/finished()
            self._error = exc
        self.write_s += time.perf_counter() - started

    def finished(self) -> int | None:
        """The step of a write that has completed since the last call, without blocking."""
        if self._thread is not None and not self._thread.is_alive():
            return self.wait()
        return None

    def wait(self) -> int | None:
        """Block until the write in flight is on disk; its step, or None if there was none."""
        if self._thread is None:
            return None
        self._thread.join()
        self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        return self._step


class Child:
    def __init__(self, conn: Connection, config: MiningConfig, priority: str = "") -> None:
        self.conn = conn
        self.config = config
        self.priority = priority  # what `apply_priority` did, reported with "ready"
        self.last_sent = 0.0
        self.job = ""
        self.trace: _Trace | None = None
        self.duty = 1.0  # share of the time spent training (the power throttle's lever)

    def send(self, msg: dict[str, Any], blob: bytes | None = None) -> None:
        msg.setdefault("job", self.job)
        self.conn.send_bytes(json.dumps(msg).encode())
        if blob is not None:
            self.conn.send_bytes(blob)
        self.last_sent = time.monotonic()

    def recv(self) -> dict[str, Any]:
        return dict(json.loads(self.conn.recv_bytes()))

    def beat(self, *_: object) -> None:
        if time.monotonic() - self.last_sent >= self.config.heartbeat_interval_s:
            self.send({"type": "hb"})

    # -- one round ----------------------------------------------------------------------
    def run_job(self, msg: dict[str, Any]) -> None:
        from r3mes_desktop.adapters.mining import training  # torch: child only

        job_started = time.perf_counter()
        self.job = msg["job"]
        # Per-round knobs travel with the job, so changing them needs no worker restart.
        cfg = dataclasses.replace(self.config, **msg.get("settings", {}))
        if "duty" in msg:
            self.duty = _duty(msg)
        plan = TrainPlan.from_json(msg["plan"])
        tx = msg["transaction_id"]
        store = CheckpointStore(
            Path(msg["checkpoint_root"]),
            keep=cfg.keep_checkpoints,
            min_free_bytes=int(cfg.min_free_disk_mb * 2**20),
        )
        device = training.resolve_device(self.config.device)
        training.apply_vram_cap(device, self.config.vram_cap_mb)
        run = training.RoundTraining(
            plan,
            device=device,
            memory_budget_mb=cfg.memory_budget_mb,
            micro_hook=self.beat,
            adapter=_adapter(msg.get("adapter_path")),
            dataset=None
            if msg.get("dataset_path") is None
            else Path(msg["dataset_path"]).read_bytes(),
        )
        loaded = store.load_latest(tx, expect={"fingerprint": plan.fingerprint()})
        if loaded is not None:
            run.restore(loaded.tensors, loaded.state)
            self.send({"type": "resumed_from", "step": run.step})
        saver = BackgroundSaver(store, tx, plan.round_id)
        timing = {
            "setup_s": time.perf_counter() - job_started,
            "steps_s": 0.0,
            "capture_s": 0.0,
            "throttle_s": 0.0,
        }
        label = str(device) if device.type == "cpu" else f"{device} ({_cuda_name(device)})"
        bound = msg.get("trace")
        self.trace = None if bound is None else _Trace(bound, plan)
        try:
            self._train_steps(run, plan, cfg, saver, timing, label)
        except _Stop:
            self.send({"type": "stopped", "step": run.step})
            return
        except BaseException:
            with contextlib.suppress(Exception):
                saver.wait()  # leave no write running; the first error is the one reported
            raise
        meta, data = _result_frame(run, cfg, label, training.torch_threads)
        if self.trace is not None:
            data = self.trace.package(run, data)
        meta["timing"] = {
            **timing,
            "checkpoint_write_s": saver.write_s,
            "job_s": time.perf_counter() - job_started,
        }
        self.send(meta, data)

    def _train_steps(
        self,
        run: Any,
        plan: TrainPlan,
        cfg: MiningConfig,
        saver: BackgroundSaver,
        timing: dict[str, float],
        label: str,
    ) -> None:
        """Train to the plan's last step, reporting progress and checkpointing every
        `checkpoint_interval` steps; returns once the last checkpoint is on disk, so nothing
        writes after the result. Raises `_Stop` when the parent asks to stop."""
        per_step = plan.model.batch_size * plan.model.seq_len
        if self.trace is not None:
            self.trace.commit(run)  # the starting state (again, idempotently, after a resume)

        def save() -> None:
            self._checkpoint(run, saver, timing, wait=True)

        loop_started = time.perf_counter()
        while run.step < plan.steps:
            self._control(save)
            started = time.perf_counter()
            loss = run.train_step()
            elapsed = max(time.perf_counter() - started, 1e-9)
            timing["steps_s"] += elapsed
            if self.trace is not None:
                self.trace.commit(run)
            self.send(
                {
                    "type": "progress",
                    "step": run.step,
                    "steps": plan.steps,
                    "loss": loss,
                    "tokens_per_s": per_step / elapsed,
                    "device": label,
                    "micro_batch": run.micro_batch,
                }
            )
            self._saved(saver.finished())
            if run.step % cfg.checkpoint_interval == 0 or run.step == plan.steps:
                self._checkpoint(run, saver, timing, wait=False)
            if run.step < plan.steps:
                self._throttle(time.perf_counter() - started, timing, save)
        timing["loop_s"] = time.perf_counter() - loop_started  # steps, bookkeeping, sleeps
        self._saved(saver.wait())

    def _throttle(self, busy: float, timing: dict[str, float], save: Callable[[], None]) -> None:
        """Below a duty of 1, sleep after a step so that busy / (busy + sleep) = duty, where
        busy is the step and its bookkeeping. The sleep waits on the pipe: a pause or stop
        is handled at once, a new duty changes the sleep still owed, and heartbeats go on."""
        if self.duty >= 1.0:
            return
        started = time.perf_counter()
        while self.duty < 1.0:
            owed = busy * (1.0 - self.duty) / self.duty - (time.perf_counter() - started)
            if owed <= 0:
                break
            if self.conn.poll(min(owed, self.config.heartbeat_interval_s)):
                self._control(save)
            else:
                self.beat()
        timing["throttle_s"] += time.perf_counter() - started

    def _saved(self, step: int | None) -> None:
        """Tell the parent a checkpoint write completed (None: none did)."""
        if step is not None:
            self.send({"type": "checkpoint", "step": step})

    def _checkpoint(
        self, run: Any, saver: BackgroundSaver, timing: dict[str, float], *, wait: bool
    ) -> None:
        """Capture the state (the only part that stops training) and hand it to the saver;
        `wait` (pause, stop) blocks until it is on disk."""
        started = time.perf_counter()
        arrays, state = run.checkpoint_state()
        timing["capture_s"] += time.perf_counter() - started
        self._saved(saver.submit(run.step, arrays, state))
        if wait:
            self._saved(saver.wait())

    def _control(self, save: Any) -> None:
        """Handle pause/stop/duty requests that arrived since the last step."""
        while self.conn.poll(0):
            msg = self.recv()
            cmd = msg["type"]
            if cmd == "duty":
                self.duty = _duty(msg)
            elif cmd == "stop":
                save()
                raise _Stop
            elif cmd == "pause":
                save()
                self.send({"type": "paused"})
                while True:
                    if self.conn.poll(self.config.heartbeat_interval_s):
                        msg = self.recv()
                        cmd = msg["type"]
                        if cmd == "duty":
                            self.duty = _duty(msg)
                        elif cmd == "resume":
                            self.send({"type": "resumed"})
                            break
                        elif cmd == "stop":
                            raise _Stop
                    self.send({"type": "hb"})

    def serve(self) -> None:
        from r3mes_desktop.adapters.mining import (
            training,  # sets CUDA/OpenMP env, then imports torch
        )

        training.configure_determinism(self.config.num_threads)
        self.send(
            {
                "type": "ready",
                "pid": os.getpid(),
                "torch": training.TORCH_VERSION,
                "priority": self.priority,
            }
        )
        while True:
            try:
                msg = self.recv()
            except (EOFError, OSError):
                return  # the parent went away
            if msg["type"] == "shutdown":
                return
            if msg["type"] == "duty":
                self.duty = _duty(msg)
                continue
            if msg["type"] != "train":
                continue  # a late pause/stop for a job that already ended
            try:
                self.run_job(msg)
            except Exception as exc:  # classified and reported; the worker lives on
                err: R3mesError = to_r3mes_error(exc)
                self.send({"type": "error", "category": classify(err), "message": err.message})
            finally:
                self.job = ""


class _Trace:
    """The committed states of a bound run (see `adapters.mining.trace`)."""

    def __init__(self, spec: dict[str, Any], plan: TrainPlan) -> None:
        self.dir = commitments.TraceDir(Path(spec["dir"]))
        self.miner = str(spec["miner"])
        self.assignment = bytes.fromhex(spec["assignment"])
        self.segment_steps = int(spec.get("segment_steps", 1))
        self.plan = plan

    def commit(self, run: Any) -> None:
        from r3mes_desktop.adapters.mining import trace

        index = commitments.leaf_index(run.step, self.segment_steps, self.plan.steps)
        if index is not None:
            self.dir.write(index, trace.state_bytes(run))

    def package(self, run: Any, update: bytes) -> bytes:
        from r3mes_desktop.adapters.mining import trace

        manifest = trace.build_manifest(
            run,
            self.plan,
            self.dir,
            miner=self.miner,
            assignment=self.assignment,
            segment_steps=self.segment_steps,
        )
        package = commitments.build_package(update, manifest)
        self.dir.seal(manifest, package)
        return package


def _adapter(path: str | None) -> dict[str, Any] | None:
    """The network adapter file the parent fetched and verified; training re-checks its
    sha256 against the plan."""
    if path is None:
        return None
    from safetensors.numpy import load_file

    return dict(load_file(path))


def _result_frame(
    run: Any, cfg: MiningConfig, label: str, threads: Callable[[], int]
) -> tuple[dict[str, Any], bytes]:
    """The round's "result" frame (timing added by the caller) and the update bytes, refused
    when over `max_gradient_size_mb`: the store would reject it after the upload anyway."""
    out = run.output()
    max_bytes = cfg.max_gradient_size_mb * 2**20
    if len(out.data) > max_bytes:
        raise to_r3mes_error(
            ValueError(
                f"gradient is {len(out.data) / 2**20:.2f} MB, over max_gradient_size_mb="
                f"{cfg.max_gradient_size_mb:g} (R3MES_MAX_GRADIENT_SIZE_MB); "
                "use a smaller lora_rank"
            )
        )
    meta = {
        "type": "result",
        "tokens": out.tokens,
        "final_loss": out.final_loss,
        "micro_batch": out.micro_batch,
        "oom_retries": out.oom_retries,
        "device": label,
        "threads": threads(),
    }
    return meta, out.data


def _cuda_name(device: Any) -> str:
    import torch

    return str(torch.cuda.get_device_name(device))


def _duty(msg: dict[str, Any]) -> float:
    """A duty frame's fraction, kept in 0.05..1 whatever the parent sent."""
    return min(1.0, max(0.05, float(msg.get("duty", 1.0))))


def child_main(conn: Connection, config_json: str, priority: str = "") -> None:
    Child(conn, MiningConfig(**json.loads(config_json)), priority).serve()
