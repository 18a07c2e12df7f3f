"""`bench.chaos --parallel`: the crash part in its own process, its report merged; a part
that left no report is an error with its output; nothing it started outlives it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from bench.chaos.__main__ import _crash_part_result, stop_tree
from bench.chaos.report import to_markdown


def test_the_crash_parts_report_section_is_taken(tmp_path: Path) -> None:
    (tmp_path / "report.json").write_text('{"crash": {"result": {"kills": 3}}}')
    proc = subprocess.Popen([sys.executable, "-c", "pass"], stdout=subprocess.PIPE)
    assert asyncio.run(_crash_part_result(proc, tmp_path)) == {"result": {"kills": 3}}


def test_a_crash_part_that_left_no_report_is_an_error(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", "print('it broke'); raise SystemExit(3)"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    with pytest.raises(RuntimeError, match="exited with 3, no report: it broke"):
        asyncio.run(_crash_part_result(proc, tmp_path))


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_stop_tree_kills_the_harness_and_the_miner_in_its_own_session() -> None:
    harness = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time\n"
            "miner = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'],"
            " start_new_session=True)\n"
            "print(miner.pid, flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
    )
    assert harness.stdout is not None
    miner = int(harness.stdout.readline())
    stop_tree(harness)
    harness.stdout.close()
    assert harness.returncode is not None
    assert _gone(miner)


def test_the_report_says_when_the_parts_ran_at_the_same_time() -> None:
    report = {"command": "python -m bench.chaos --parallel", "machine": "m", "seed": 1}
    assert "at the same time" in to_markdown({**report, "seconds": 1.0, "parallel": True})
    assert "at the same time" not in to_markdown({**report, "seconds": 1.0})
