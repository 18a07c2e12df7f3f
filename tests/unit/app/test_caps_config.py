"""The caps settings become the workers' config: threads, PoW processes, priority,
memory budget and VRAM cap (app.builders.mining_config / build_pow)."""

from __future__ import annotations

import pytest

from r3mes_desktop.adapters.mining.settings import MiningConfig, pow_processes, training_threads
from r3mes_desktop.app.builders import build_pow, mining_config
from r3mes_desktop.core.errors import ValidationError
from r3mes_desktop.support.config import Settings


def test_training_threads_zero_is_all_cores_but_one() -> None:
    assert training_threads(0, cpu_count=8) == 7
    assert training_threads(0, cpu_count=1) == 1
    assert training_threads(3, cpu_count=8) == 3


def test_pow_processes_zero_takes_the_cores_training_leaves_or_uses() -> None:
    # a CPU rig proves after it trains (one lane): every core, or the training's cap
    assert pow_processes(0, devices=["cpu"], training_threads_setting=0, cpu_count=8) == 8
    assert pow_processes(0, devices=["cpu"], training_threads_setting=3, cpu_count=8) == 3
    assert pow_processes(0, devices=["auto"], training_threads_setting=0, cpu_count=2) == 2
    # GPUs train: one busy core feeds each
    assert pow_processes(0, devices=["cuda:0"], cpu_count=16) == 15
    assert pow_processes(0, devices=["cuda:0", "cuda:1", "cuda:2"], cpu_count=16) == 13
    assert pow_processes(0, devices=[f"cuda:{i}" for i in range(4)], cpu_count=2) == 1
    # a number given is the number
    assert pow_processes(6, devices=["cpu"], training_threads_setting=7, cpu_count=8) == 6


def test_mining_config_carries_the_caps_settings() -> None:
    settings = Settings(
        training_threads=3,
        pow_threads=0,
        process_priority="idle",
        memory_budget_mb=2048,
        gpu_vram_cap_mb=8192,
    )
    cpu = mining_config(settings=settings, device="cpu")
    assert cpu.num_threads == 3
    assert cpu.priority == "idle"
    assert cpu.memory_budget_mb == 2048.0
    assert cpu.vram_cap_mb == 8192.0
    assert cpu.pow_processes == 3  # the training's threads: a CPU rig proves after it trains
    two_gpus = mining_config(settings=settings, device="cuda:0", devices=["cuda:0", "cuda:1"])
    assert two_gpus.pow_processes == max(1, (__import__("os").cpu_count() or 1) - 2)
    pow_ = build_pow(trainer=type("T", (), {"config": cpu})())  # type: ignore[arg-type]
    assert pow_.processes == cpu.pow_processes and pow_.priority == "idle"


def test_the_default_settings_run_the_workers_at_low_priority() -> None:
    assert mining_config(settings=Settings(), device="cpu").priority == "low"


def test_a_bad_priority_is_refused() -> None:
    with pytest.raises(ValidationError, match="priority"):
        MiningConfig(priority="realtime")
