"""cleanup-stale, resume, dead-letters --retry/--discard through `main()`.

The command code is the one rigs run; only `open_runtime` is swapped for a coordinator on
in-process fakes (the real Runtime path is covered by test_run_signals). Each invocation
builds a fresh coordinator on the same journal file, as separate CLI processes would.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from r3mes_desktop.app.instance_lock import InstanceLock
from r3mes_desktop.cli import commands_run
from r3mes_desktop.cli.exit_codes import ExitCode
from r3mes_desktop.core.errors import PermanentError
from r3mes_desktop.support.config import paths
from tests.helpers.coordinator_rig import Rig, build_coordinator, make_rig
from tests.helpers.fakes import BlockingTrainer, make_spec
from tests.unit.cli.conftest import RunCli

Configure = Callable[[Rig], None]


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Configure]:
    """Patch open_runtime; tests append a configure(rig) for the next invocation."""
    plans: list[Configure] = []

    @contextlib.asynccontextmanager
    async def fake_open_runtime(
        ctx: Any, *, fast: bool = False, args: Any = None
    ) -> AsyncIterator[Any]:
        rig = make_rig(tmp_path)
        for configure in plans:
            configure(rig)
        coordinator = _on_cli_journal(build_coordinator(rig))
        lock = InstanceLock(ctx.paths.data_dir)
        lock.acquire()
        await coordinator.start(background=False)
        try:
            yield SimpleNamespace(
                coordinator=coordinator,
                bus=rig.bus,
                breakers=coordinator.breakers,
                settings=rig.settings,
            )
        finally:
            await coordinator.close()
            lock.release()

    monkeypatch.setattr(commands_run, "open_runtime", fake_open_runtime)
    return plans


def _on_cli_journal(coordinator: Any) -> Any:
    """Point the coordinator at the journal the read commands open (data dir)."""
    path = paths().data_dir / "journal.sqlite"
    path.parent.mkdir(parents=True, exist_ok=True)
    coordinator.journal.path = path
    return coordinator


def _setup(tmp_path: Path, scenario: Callable[[Rig], Any]) -> Any:
    async def go() -> Any:
        rig = make_rig(tmp_path)
        _on_cli_journal(rig.coordinator)
        await rig.coordinator.start(background=False)
        try:
            return await scenario(rig)
        finally:
            await rig.coordinator.close()

    return asyncio.run(go())


def test_cleanup_stale_closes_a_stuck_transaction(
    tmp_path: Path, world: list[Configure], cli: RunCli
) -> None:
    async def stuck(rig: Rig) -> str:
        rec = await rig.coordinator.journal.create(
            tx_id="mining_tx_stuck",
            spec=make_spec(9),
            miner=rig.coordinator.saga.miner,
            now=rig.clock.time(),
            deadline=None,
        )
        return rec.id

    tx = _setup(tmp_path, stuck)

    def blocked_and_late(rig: Rig) -> None:
        rig.trainer = BlockingTrainer()  # type: ignore[assignment]
        rig.clock.advance(3600)

    world.append(blocked_and_late)
    code, out, _ = cli("cleanup-stale", "--older-than", "600", "--json")
    assert code == ExitCode.OK
    assert out["count"] == 1 and out["cleaned"][0]["transaction_id"] == tx
    code, out, _ = cli("status", tx, "--json")
    assert out["state"] in ("failed", "rolled_back")
    code, out, _ = cli("cleanup-stale", "--json")
    assert code == 0 and out["count"] == 0
    code, _, err = cli("cleanup-stale", "--older-than", "-1")
    assert code == ExitCode.USAGE and "--older-than must be >= 0" in err
    code, _, _ = cli("cleanup-stale", "--transaction", "nope")
    assert code == ExitCode.NOT_FOUND


def test_dead_letter_retry_and_discard(tmp_path: Path, world: list[Configure], cli: RunCli) -> None:
    async def two_dead(rig: Rig) -> None:
        rig.faults.fail("add_and_pin", PermanentError("model gone"), times=None)
        await rig.coordinator.run_transaction(make_spec(1))
        await rig.coordinator.run_transaction(make_spec(2))

    _setup(tmp_path, two_dead)
    code, letters, _ = cli("dead-letters", "--json")
    assert code == 0 and len(letters) == 2
    first, second = (str(d["id"]) for d in letters)

    code, out, _ = cli("dead-letters", "--retry", first, "--json")
    assert code == ExitCode.OK and out["state"] == "committed"
    code, out, _ = cli("dead-letters", "--discard", second, "--json")
    assert code == ExitCode.OK and out == {"discarded": second}
    code, out, _ = cli("dead-letters", "--json")
    assert out == []
    code, out, _ = cli("dead-letters", "--all", "--json")
    assert sorted(d["status"] for d in out) == ["discarded", "retried"]
    code, _, err = cli("dead-letters", "--retry", first)
    assert code == ExitCode.NOT_FOUND and "no open dead letter" in err


def test_resume_lists_then_resumes_a_training_failure(
    tmp_path: Path, world: list[Configure], cli: RunCli
) -> None:
    async def failed_training(rig: Rig) -> str:
        rig.faults.fail("train", PermanentError("device lost"), times=None)
        status = await rig.coordinator.run_transaction(make_spec(4))
        return str(status.transaction_id)

    tx = _setup(tmp_path, failed_training)
    code, listed, _ = cli("resume", "--json")
    assert code == 0 and [r["transaction_id"] for r in listed] == [tx]
    code, out, _ = cli("resume", tx, "--json", "-q")
    assert code == ExitCode.OK and out[0]["state"] == "committed"
    code, listed, _ = cli("resume", "--json")
    assert listed == []
    code, _, _ = cli("resume", "nope")
    assert code == ExitCode.NOT_FOUND


def test_journal_changing_commands_refuse_while_a_miner_runs(
    world: list[Configure], cli: RunCli
) -> None:
    with InstanceLock(paths().data_dir):
        code, out, err = cli("cleanup-stale", "--json")
    assert code == ExitCode.BUSY and out["error"]["kind"] == "busy"
    assert "another r3mes miner" in err
