"""The multi-miner invariants each catch what they name (a check that cannot fail proves
nothing): synthetic journal rows, chain views and store contents, one fault at a time."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from bench.chaos.__main__ import parse_args
from bench.chaos.invariants import Findings, MinerView, check_miner
from bench.chaos.report import failures, summary, to_markdown
from r3mes_desktop.core.cid import compute_cid

CONTENT = b"gradient bytes of round 1"
CID = str(compute_cid(CONTENT))
HASH = hashlib.sha256(CONTENT).hexdigest()


def _row(round_id: int, state: str, **fields: Any) -> dict[str, Any]:
    row = {"id": f"tx-{round_id}-{state}", "round_id": round_id, "state": state, "cid": None}
    row["gradient_hash"] = None
    if state == "committed":
        row.update(cid=CID, gradient_hash=HASH)
    row.update(fields)
    return row


def _view(**changes: Any) -> MinerView:
    values: dict[str, Any] = {"stored": {1: (CID, bytes.fromhex(HASH), 7, 12)}, "open_for": set()}
    values.update(changes)
    return MinerView(**values)


def _check(
    rows: list[dict[str, Any]],
    *,
    letters: list[tuple[str, int]] | None = None,
    view: MinerView | None = None,
    pins: set[str] | None = None,
    content: bytes | None = CONTENT,
) -> list[str]:
    findings = Findings()
    check_miner(
        "miner-1",
        rows,
        letters or [],
        view or _view(),
        {CID} if pins is None else pins,
        lambda cid: content,
        findings,
    )
    return findings.violations


def test_a_clean_miner_has_no_violation() -> None:
    rows = [_row(1, "rolled_back"), _row(1, "committed"), _row(2, "failed")]
    assert _check(rows, letters=[("L2", 2)]) == []


def test_a_committed_cid_that_is_not_pinned_is_a_violation() -> None:
    assert _check([_row(1, "committed")], pins=set()) == [
        f"miner-1: round 1: committed CID {CID} is not pinned"
    ]


def test_committed_content_that_cannot_be_read_is_a_violation() -> None:
    assert _check([_row(1, "committed")], content=None) == [
        f"miner-1: round 1: committed CID {CID} is not retrievable"
    ]


def test_committed_content_that_does_not_hash_to_the_chain_is_a_violation() -> None:
    assert _check([_row(1, "committed")], content=b"other bytes") == [
        f"miner-1: round 1: content of {CID} does not hash to the on-chain gradient hash"
    ]


def test_a_started_round_left_open_and_assignable_is_a_violation() -> None:
    rows = [_row(1, "committed"), _row(2, "rolled_back")]
    assert _check(rows, view=_view(open_for={2, 3})) == [
        "miner-1: round 2: started ['rolled_back'], left un-mined while still open and "
        "assignable to it"
    ]


def test_a_round_mined_again_after_a_rollback_is_not_left_open() -> None:
    rows = [_row(1, "rolled_back"), _row(1, "committed")]
    assert _check(rows, view=_view(open_for={3})) == []


def test_an_open_dead_letter_of_a_settled_round_is_a_violation() -> None:
    rows = [_row(1, "rolled_back"), _row(1, "committed")]
    assert _check(rows, letters=[("L1", 1)]) == [
        "miner-1: dead letter L1 still open for settled round 1"
    ]


def test_a_chain_submission_without_a_committed_transaction_is_a_violation() -> None:
    assert _check([_row(1, "rolled_back")]) == [
        "miner-1: round 1: on-chain submission without a COMMITTED tx ['rolled_back']"
    ]


MULTI = {
    "result": {
        "miners": {
            "miner-1": {
                "states": {"committed": 5},
                "funded_from_start": True,
                "resigned": 1,
                "superseded": 0,
                "dead_letters_open": 0,
                "kept_pins": 2,
                "starts": 2,
                "exit_code": 143,
            }
        },
        "rounds_opened": 6,
        "rounds_closed": 6,
        "hand_sent": 3,
        "hand_sent_failed": 0,
        "ipfs_outages": 3,
        "kills": 1,
        "funded_after_s": 12.0,
        "letters_retried": 1,
        "letters_retried_committed": 1,
        "drained": True,
        "repo_gc": "done",
        "seconds": 80.0,
    },
    "invariants": {
        "violations": ["miner-1: round 2: committed CID x is not pinned"],
        "states": {"committed": 5},
        "on_chain_submissions": 5,
        "pinned": 5,
        "files_scanned": 20,
    },
}


def _report(**parts: Any) -> dict[str, Any]:
    return {"command": "python -m bench.chaos", "machine": "m", "seed": 1, "seconds": 9.0, **parts}


def test_the_report_fails_on_a_multi_miner_violation_and_an_unfinished_drain() -> None:
    assert failures(_report(multi=MULTI)) == [
        "multi: miner-1: round 2: committed CID x is not pinned"
    ]
    stuck = {**MULTI, "result": {**MULTI["result"], "drained": False}}
    assert "unfinished when the drain time ran out" in failures(_report(multi=stuck))[-1]
    assert "multi: 1 miners" in summary(_report(multi=MULTI))
    unclean = {**MULTI, "invariants": {**MULTI["invariants"], "violations": []}}
    unclean["result"] = {
        **MULTI["result"],
        "miners": {"miner-1": {**MULTI["result"]["miners"]["miner-1"], "exit_code": 1}},
    }
    assert failures(_report(multi=unclean)) == ["multi: miner-1 exited with 1 on SIGTERM, not 143"]
    text = to_markdown(_report(multi=MULTI))
    assert "## Multi-miner run" in text and "| miner-1 | funded | 5 | 0 | 0 | 1 |" in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--multi-miners", "1"], "--multi-miners must be 0 (skip) or 2-8, got 1"),
        (["--multi-seconds", "5"], "--multi-seconds must be 10-3600, got 5.0"),
    ],
)
def test_bad_multi_miner_sizes_are_refused_with_the_range(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert message in capsys.readouterr().err
