"""The reduced chaos run of `bench.chaos` in CI: real runtime under the fault plan, the
headless miner SIGKILLed and restarted, the bad-input table; any invariant violation
(checked against the devnet chain and store) fails the test suite.

With `--parallel` the crash part runs in its own `python -m bench.chaos` process at the
same time as the chaos part (its own work dir, miners and log files; both checked as
always): on a 2-core machine one after the other takes minutes longer.

A failure's first line is `bench.chaos.report.summary`: what failed and the run's counts.
Pytest's own log capture keeps only errors and the harness's progress lines while the run
goes (thousands of INFO retry lines would bury the failure); the run's log files under the
work dir keep everything.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _pytest.logging import LogCaptureHandler

from bench.chaos.__main__ import main
from bench.chaos.report import failures, summary

# ~8 min on a quiet 2-core machine; a hang guard, not a speed target: on a host that steals
# half the guest's CPU (measured: 36-72 % steal in vmstat) the same run took over 10 min.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

TRANSACTIONS = 200
CRASHES = 18
SIGTERMS = 2


def _errors_and_progress(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR or record.name.startswith("bench.chaos")


@contextlib.contextmanager
def pytest_capture_errors_and_progress() -> Iterator[None]:
    """Pytest's capture handlers (the "Captured log" sections) keep only errors and the
    harness's own progress lines (a few per part: where a timed-out run got to)."""
    handlers = [h for h in logging.getLogger().handlers if isinstance(h, LogCaptureHandler)]
    for handler in handlers:
        handler.addFilter(_errors_and_progress)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(_errors_and_progress)


def expectations(report: dict[str, Any]) -> list[str]:
    """What this run must show besides `failures`: that each part really ran at size."""
    out: list[str] = []
    chaos, crash, bad = report["chaos"], report["crash"], report["bad_inputs"]
    if "result" in chaos:
        r = chaos["result"]
        if r["attempted"] < TRANSACTIONS:
            out.append(f"chaos: {r['attempted']} of {TRANSACTIONS} transactions attempted")
        if not sum(r["faults"].values()):
            out.append("chaos: no fault injected")
        if r["notices"] != 1:
            out.append(f"chaos: {r['notices']} fault-plan notices, expected 1")
        if not chaos["invariants"]["states"].get("committed"):
            out.append("chaos: nothing committed")
    if "result" in crash:
        r = crash["result"]
        if r["kills"] != CRASHES:
            out.append(f"crash: {r['kills']} of {CRASHES} kills")
        if r["sigterm_clean_exits"] != SIGTERMS:
            out.append(f"crash: {r['sigterm_clean_exits']} of {SIGTERMS} clean SIGTERM exits")
    if "tried" in bad and bad["tried"] < 50:
        out.append(f"bad inputs: only {bad['tried']} tried")
    return out


def test_reduced_chaos_run_keeps_every_invariant(tmp_path: Path) -> None:
    out = tmp_path / "chaos"
    with pytest_capture_errors_and_progress():
        code = main(
            [
                "--transactions", str(TRANSACTIONS),
                "--crashes", str(CRASHES),
                "--sigterms", str(SIGTERMS),
                "--max-uptime", "3",
                "--seed", "1",
                "--parallel",
                "--multi-miners", "0",  # its own test: tests/chaos/test_multi_miner.py
                "--out", str(out),
                "--quiet",
            ]
        )  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    problems = failures(report) + expectations(report)
    assert not problems and code == 0, summary(report, problems) + f"; exit status {code}"
