"""CLI tests run `main(argv)` in-process against a journal filled by a real coordinator
(in-process fakes for the services, a ManualClock), in the test's isolated data dir."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from r3mes_desktop.cli import main
from r3mes_desktop.core.errors import PermanentError
from r3mes_desktop.core.pow import is_valid_pow
from r3mes_desktop.core.steps import ProgressCallback
from r3mes_desktop.support.config import paths
from tests.helpers.coordinator_rig import Rig, build_coordinator, make_rig
from tests.helpers.fakes import make_spec


class SolvingPow:
    """A real (tiny difficulty) proof-of-work search, so `verify` can accept it."""

    async def solve(
        self,
        *,
        gradient_hash: bytes,
        miner: str,
        round_id: int,
        difficulty: int,
        progress: ProgressCallback,
    ) -> int:
        nonce = 0
        while not is_valid_pow(gradient_hash, miner, round_id, nonce, difficulty):
            nonce += 1
        progress(1.0, {"hash_rate": 1.0})
        return nonce


@dataclass
class Filled:
    rig: Rig
    committed: str
    dead: str


async def fill_journal(tmp: Path) -> Filled:
    """Two rounds in the CLI's journal: one committed (and accepted by a validator, 100
    credits, its update aggregated into the network model's version 1), one dead-lettered."""
    rig = make_rig(tmp, verdicts=True, versions=True)
    rig.pow = SolvingPow()  # type: ignore[assignment]
    data_dir = paths().data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    rig.tmp = data_dir
    coordinator = build_coordinator(rig)
    coordinator.journal.path = data_dir / "journal.sqlite"
    await coordinator.start(background=False)
    try:
        ok = await coordinator.run_transaction(make_spec(1))
        rig.chain.post_verdict(1, accepted=True)
        assert coordinator.verdict_watch is not None
        await coordinator.verdict_watch.poll()
        rig.chain.publish_version(1, eval_loss=1.25)
        assert coordinator.model_watch is not None
        await coordinator.model_watch.poll()
        rig.faults.fail("add_and_pin", PermanentError("model gone"), times=None)
        dead = await coordinator.run_transaction(make_spec(2))
    finally:
        await coordinator.close()
    rig.faults.clear()
    return Filled(rig, ok.transaction_id, dead.transaction_id)


@pytest.fixture(scope="session")
def journal_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Filled]:
    """Filled once per session in its own data dir; tests get a copy of the journal."""
    root = tmp_path_factory.mktemp("cli-template")
    saved = os.environ.get("R3MES_DATA_DIR")
    os.environ["R3MES_DATA_DIR"] = str(root / "data")
    try:
        filled = asyncio.run(fill_journal(root))
    finally:
        if saved is None:
            os.environ.pop("R3MES_DATA_DIR", None)
        else:
            os.environ["R3MES_DATA_DIR"] = saved
    return root / "data", filled


@pytest.fixture
def journal(journal_template: tuple[Path, Filled]) -> Filled:
    """A copy of the template journal in this test's data dir (read-only use of artifacts)."""
    source, filled = journal_template
    target = paths().data_dir
    target.mkdir(parents=True, exist_ok=True)
    for path in source.glob("journal.sqlite*"):
        shutil.copy2(path, target / path.name)
    return filled


RunCli = Callable[..., tuple[int, Any, str]]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> RunCli:
    """Run `r3mes-miner ARGS`; returns (exit code, parsed JSON or text, stderr)."""

    def run(*args: str) -> tuple[int, Any, str]:
        code = main(list(args))
        captured = capsys.readouterr()
        out: Any = captured.out
        if "--json" in args and captured.out.strip():
            out = json.loads(captured.out)
        return code, out, captured.err

    return run
