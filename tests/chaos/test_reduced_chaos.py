"""The reduced chaos run of `bench.chaos` in CI: real runtime under the fault plan, the
headless miner SIGKILLed and restarted, the bad-input table; any invariant violation
(checked against the devnet chain and store) fails the test suite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.chaos.__main__ import main

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_reduced_chaos_run_keeps_every_invariant(tmp_path: Path) -> None:
    out = tmp_path / "chaos"
    code = main(
        [
            "--transactions", "20",
            "--crashes", "10",
            "--sigterms", "2",
            "--max-uptime", "4",
            "--seed", "1",
            "--out", str(out),
        ]
    )  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    assert code == 0, (out / "report.md").read_text()
    chaos, crash, bad = report["chaos"], report["crash"], report["bad_inputs"]
    assert chaos["invariants"]["violations"] == []
    assert chaos["result"]["attempted"] >= 20
    assert sum(chaos["result"]["faults"].values()) > 0  # faults really were injected
    assert chaos["result"]["notices"] == 1  # the runtime announced the fault plan
    assert chaos["invariants"]["states"].get("committed", 0) > 0
    assert crash["invariants"]["violations"] == []
    assert crash["result"]["kills"] == 10
    assert crash["result"]["sigterm_clean_exits"] == 2
    assert bad["tried"] >= 50 and bad["failed"] == []
