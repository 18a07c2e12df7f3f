"""The chaos report's failure list and one-line summary: what a CI log shows first."""

from __future__ import annotations

from typing import Any

from bench.chaos.report import failures, summary, to_markdown


def _report(**parts: Any) -> dict[str, Any]:
    return {"command": "python -m bench.chaos", "machine": "m", "seed": 1, "seconds": 9.0, **parts}


CHAOS = {
    "result": {
        "attempted": 20,
        "faults": {"chain.http_5xx": 3},
        "notices": 1,
        "reconciled_on_restart": 0,
        "seconds": 40.0,
        "stalled": None,
        "finished": {},
    },
    "invariants": {
        "violations": ["round 3: on-chain submission without a COMMITTED tx ['rolled_back']"],
        "states": {"committed": 12, "rolled_back": 8},
        "on_chain_submissions": 13,
        "pinned": 12,
        "files_scanned": 30,
    },
}


def test_summary_names_the_violation_and_the_counts_on_one_line() -> None:
    line = summary(_report(chaos=CHAOS))
    assert "\n" not in line
    assert line.startswith('1 failures ["chaos: round 3: on-chain submission without')
    assert "attempted 20" in line and "'committed': 12" in line and "faults 3" in line


def test_a_sub_run_that_raised_is_a_failure_and_still_reported() -> None:
    report = _report(crash={"error": "RuntimeError: miner exited by itself with 7 (after 12 s)"})
    assert failures(report) == [
        "crash: raised RuntimeError: miner exited by itself with 7 (after 12 s)"
    ]
    assert "miner exited by itself" in summary(report)
    assert "miner exited by itself" in to_markdown(report)


def test_a_stuck_miner_is_a_failure() -> None:
    chaos = {**CHAOS, "result": {**CHAOS["result"], "stalled": "miner stuck: no new tx"}}
    chaos["invariants"] = {**CHAOS["invariants"], "violations": []}
    assert failures(_report(chaos=chaos)) == ["chaos: miner stuck: no new tx"]
