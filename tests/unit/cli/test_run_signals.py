"""`r3mes-miner run` on the devnet: SIGTERM mid-transaction, then restart → consistent journal.

Real processes end to end (the CLI, its torch worker, the devnet), so this is slow-marked;
it is the only test that proves the shutdown path a rig owner's systemd uses.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def _env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        R3MES_DATA_DIR=str(root / "data"),
        R3MES_CONFIG_DIR=str(root / "config"),
        R3MES_LOG_DIR=str(root / "logs"),
        PYTHONUNBUFFERED="1",
    )
    return env


def _miner(root: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "r3mes_desktop.cli", "run", "--fast", *args],
        env=_env(root),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _rows(root: Path) -> dict[str, str]:
    conn = sqlite3.connect(root / "data" / "journal.sqlite")
    try:
        return dict(conn.execute("SELECT id, state FROM transactions"))
    finally:
        conn.close()


# Rounds of 300 tiny-model steps train for seconds (8 would take ~0.1 s): the SIGTERM sent on
# the first training figures lands in training even when this test process is slow to read.
ROUND_STEPS = "300"


def test_sigterm_mid_transaction_then_restart_commits_it(tmp_path: Path) -> None:
    proc = _miner(tmp_path, "--round-steps", ROUND_STEPS)
    seen = []
    assert proc.stderr is not None
    for line in proc.stderr:  # progress lines: "<short id> training  12.5% ..."
        seen.append(line)
        if " training " in line and "%" in line:
            break
    else:
        pytest.fail("miner ended before training started:\n" + "".join(seen))
    interrupted = line.split()[0]
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "SIGTERM: stopping cleanly" in err
    summary = json.loads(out) if out.lstrip().startswith("{") else None
    assert summary is None or summary["stopped_by"] == "SIGTERM"

    states = _rows(tmp_path)
    (tx_id,) = [t for t in states if t.removeprefix("mining_tx_").startswith(interrupted)]
    assert states[tx_id] in ("pending", "training"), states  # journaled, not lost, not faked
    integrity = subprocess.run(
        [sys.executable, "-m", "r3mes_desktop.cli", "--json", "status", tx_id],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert integrity.returncode == 0, integrity.stderr
    assert json.loads(integrity.stdout)["state"] == states[tx_id]

    restart = _miner(tmp_path, "--round-steps", ROUND_STEPS, "--rounds", "1", "--json", "-q")
    out, err = restart.communicate(timeout=240)
    assert restart.returncode == 0, err
    summary = json.loads(out)
    assert summary["stopped_by"] == "rounds"
    final = _rows(tmp_path)
    assert final[tx_id] == "committed", final
    assert set(final.values()) <= {"committed"}, final
    assert "recovery" in (tmp_path / "logs" / "r3mes.log").read_text()
