"""The training worker process: the only place torch runs.

Talks to the parent over a multiprocessing pipe with JSON frames (`send_bytes`, never the
pickling `send`); the update bytes follow a "result" frame as one raw frame. Between steps
it polls for pause/resume/stop; it sends a heartbeat at least every `heartbeat_interval_s`
(also between micro-batches and while paused), which the parent's watchdog relies on.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from r3mes_desktop.core.errors import R3mesError, classify, to_r3mes_error
from r3mes_desktop.mining.checkpoint import CheckpointStore
from r3mes_desktop.mining.presets import TrainPlan
from r3mes_desktop.mining.settings import MiningConfig


class _Stop(Exception):
    """The parent asked to stop; the current state is checkpointed."""


class Child:
    def __init__(self, conn: Connection, config: MiningConfig) -> None:
        self.conn = conn
        self.config = config
        self.last_sent = 0.0
        self.job = ""

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
        from r3mes_desktop.mining import training  # torch: child only

        self.job = msg["job"]
        # Per-round knobs travel with the job, so changing them needs no worker restart.
        cfg = dataclasses.replace(self.config, **msg.get("settings", {}))
        plan = TrainPlan.from_json(msg["plan"])
        tx = msg["transaction_id"]
        store = CheckpointStore(
            Path(msg["checkpoint_root"]),
            keep=cfg.keep_checkpoints,
            min_free_bytes=int(cfg.min_free_disk_mb * 2**20),
        )
        device = training.resolve_device(self.config.device)
        run = training.RoundTraining(
            plan,
            device=device,
            memory_budget_mb=cfg.memory_budget_mb,
            micro_hook=self.beat,
        )
        loaded = store.load_latest(tx, expect={"fingerprint": plan.fingerprint()})
        if loaded is not None:
            run.restore(loaded.tensors, loaded.state)
            self.send({"type": "resumed_from", "step": run.step})

        def save() -> None:
            arrays, state = run.checkpoint_state()
            store.save(tx, round_id=plan.round_id, step=run.step, tensors=arrays, state=state)
            self.send({"type": "checkpoint", "step": run.step})

        label = str(device) if device.type == "cpu" else f"{device} ({_cuda_name(device)})"
        per_step = plan.model.batch_size * plan.model.seq_len
        try:
            while run.step < plan.steps:
                self._control(save)
                started = time.perf_counter()
                loss = run.train_step()
                elapsed = max(time.perf_counter() - started, 1e-9)
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
                if run.step % cfg.checkpoint_interval == 0 or run.step == plan.steps:
                    save()
        except _Stop:
            self.send({"type": "stopped", "step": run.step})
            return
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
        }
        self.send(meta, out.data)

    def _control(self, save: Any) -> None:
        """Handle pause/stop requests that arrived since the last step."""
        while self.conn.poll(0):
            cmd = self.recv()["type"]
            if cmd == "stop":
                save()
                raise _Stop
            if cmd == "pause":
                save()
                self.send({"type": "paused"})
                while True:
                    if self.conn.poll(self.config.heartbeat_interval_s):
                        cmd = self.recv()["type"]
                        if cmd == "resume":
                            self.send({"type": "resumed"})
                            break
                        if cmd == "stop":
                            raise _Stop
                    self.send({"type": "hb"})

    def serve(self) -> None:
        from r3mes_desktop.mining import training  # sets CUDA/OpenMP env, then imports torch

        training.configure_determinism(self.config.num_threads)
        self.send({"type": "ready", "pid": os.getpid(), "torch": training.TORCH_VERSION})
        while True:
            try:
                msg = self.recv()
            except (EOFError, OSError):
                return  # the parent went away
            if msg["type"] == "shutdown":
                return
            if msg["type"] != "train":
                continue  # a late pause/stop for a job that already ended
            try:
                self.run_job(msg)
            except Exception as exc:  # classified and reported; the worker lives on
                err: R3mesError = to_r3mes_error(exc)
                self.send({"type": "error", "category": classify(err), "message": err.message})
            finally:
                self.job = ""


def _cuda_name(device: Any) -> str:
    import torch

    return str(torch.cuda.get_device_name(device))


def child_main(conn: Connection, config_json: str) -> None:
    Child(conn, MiningConfig(**json.loads(config_json))).serve()
