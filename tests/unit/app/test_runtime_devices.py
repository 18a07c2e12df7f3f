"""The runtime's devices and governor on the devnet: switching the mining device and the
governor's policies applies while mining runs, with no restart."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from r3mes_desktop.app.runtime import Runtime, RuntimeOptions
from r3mes_desktop.core.events import GovernorStateChanged, TransactionStateChanged
from r3mes_desktop.support.config import updated

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


async def _until(predicate: Any, limit_s: float = 120.0) -> None:
    for _ in range(int(limit_s / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"condition not met within {limit_s} s")


@pytest.fixture
def program(tmp_path: Path) -> Iterator[str]:
    """A running process the process list names by the returned name (a link to sleep)."""
    sleep = shutil.which("sleep")
    if sleep is None:
        pytest.skip("no sleep(1) on PATH")
    name = f"r3dev{os.getpid() % 100000}"
    (tmp_path / name).symlink_to(sleep)
    holder = subprocess.Popen([str(tmp_path / name), "300"])
    try:
        yield name
    finally:
        holder.kill()
        holder.wait()


async def test_devices_and_governor_switch_live(
    tmp_path: Path, monkeypatch: Any, program: str
) -> None:
    await _switch_live(tmp_path, monkeypatch, program)


async def _switch_live(tmp_path: Path, monkeypatch: Any, program: str) -> None:
    monkeypatch.setenv("R3MES_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("R3MES_CONFIG_DIR", str(tmp_path / "config"))
    runtime = Runtime(options=RuntimeOptions.fast(data_dir=str(tmp_path / "data")))
    committed: list[str] = []
    governor: list[GovernorStateChanged] = []

    def seen(event: object) -> None:
        done = isinstance(event, TransactionStateChanged) and event.new_state == "committed"
        if done and isinstance(event, TransactionStateChanged):
            committed.append(event.transaction_id)
        if isinstance(event, GovernorStateChanged):
            governor.append(event)

    runtime.bus.subscribe(seen)
    await runtime.open()
    try:
        pool = runtime.trainer
        assert pool is not None and runtime.governor is None
        # no GPU here: "auto" is one worker choosing its own device; the CPU has one too
        assert set(pool.members) == {"auto", "cpu"} and pool.enabled == {"auto"}
        await runtime.miner.start()
        await _until(lambda: len(committed) >= 1)

        settings = runtime.settings
        assert settings is not None
        assert runtime.apply_settings(updated(settings, mining_devices=("cpu",))) == []
        assert pool.enabled == {"cpu"} and pool.members["auto"].paused
        before = len(committed)
        await _until(lambda: len(committed) > before)
        assert "cpu" in {device for device, _tx in _trained_on(runtime)}

        settings = runtime.settings
        assert settings is not None
        assert (
            runtime.apply_settings(
                updated(settings, training_threads=1, pow_threads=3, process_priority="idle")
            )
            == []
        )
        assert all(m.config.num_threads == 1 for m in pool.members.values())
        assert runtime.pow is not None
        assert (runtime.pow.processes, runtime.pow.priority) == (3, "idle")

        settings = runtime.settings
        assert settings is not None
        runtime.apply_settings(updated(settings, governor_pause_while=(program,)))
        await _until(lambda: bool(governor) and not governor[-1].may_run, limit_s=30)
        assert runtime.governor is not None and runtime.governor_decision is not None
        assert governor[-1].summary == f"paused: {program} is running — resumes when it exits"
        settings = runtime.settings
        assert settings is not None
        runtime.apply_settings(updated(settings, governor_pause_while=()))
        await _until(lambda: governor[-1].may_run, limit_s=30)
        assert runtime.governor is None
    finally:
        await runtime.close()


def _trained_on(runtime: Runtime) -> list[tuple[str, str]]:
    pool = runtime.trainer
    assert pool is not None
    return list(pool.trained)
