"""The multi-miner invariants each catch what they name (a check that cannot fail proves
nothing): synthetic journal rows, chain views and store contents, one fault at a time."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from bench.chaos.__main__ import parse_args
from bench.chaos.invariants import (
    Findings,
    MinerView,
    SubmissionView,
    VerdictView,
    check_miner,
    check_verdicts,
)
from bench.chaos.report import failures, summary, to_markdown
from r3mes_desktop.core.cid import compute_cid
from r3mes_desktop.core.workproof import Reason

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


VALIDATOR_ADDRESS = "0x" + "d4" * 20
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


VALIDATOR_RESULT = {
    "address": VALIDATOR_ADDRESS,
    "window_s": 5.0,
    "starts": 2,
    "kills": 1,
    "killed_with": [{"decided": 1, "posted": 3}],
    "drained": True,
    "drain_s": 12.5,
    "exit_code": 0,
}
RIDER_RESULT = {"address": "0x" + "c3" * 20, "copies": 2, "copy_reverted": 0, "completions": 2,
                "completion_reverted": 0, "unreachable": 0}  # fmt: skip
VERDICTS = {
    "submissions": 7,
    "accepted": 5,
    "rejected": {"not bound to this miner (copied or for another round)": 2},
    "copies": 2,
    "copies_rejected": 2,
    "answered_late": 0,
    "never_answered": 0,
    "posted_by_validator": 7,
    "validator_nonce": 7,
    "credits": {"miner-1": 500, "free-rider": 0},
    "journal": {"posted": 7},
}


def test_the_report_shows_the_validator_and_fails_on_its_unclean_end() -> None:
    clean = {**MULTI, "invariants": {**MULTI["invariants"], "violations": []}}
    clean["result"] = {
        **MULTI["result"], "validator": VALIDATOR_RESULT, "rider": RIDER_RESULT,
        "verdicts": VERDICTS,
    }  # fmt: skip
    assert failures(_report(multi=clean)) == []
    text = to_markdown(_report(multi=clean))
    assert (
        "| free-rider copies / rejected / completed with the copied openings | 2 / 2 / 2 |" in text
    )
    assert "| verdicts posted by the validator / its account's nonce | 7 / 7 |" in text
    assert (
        "| validator SIGKILLs (its journal at each kill) / starts | 1 (decided 1, posted 3) / 2 |"
        in text
    )
    assert "copies 2, validator kills 1" in summary(_report(multi=clean))
    stuck = {**VALIDATOR_RESULT, "drained": False, "exit_code": None}
    unclean = {**clean, "result": {**clean["result"], "validator": stuck}}
    assert failures(_report(multi=unclean)) == [
        "multi: submissions still without a verdict when the verdict drain time ran out",
        "multi: the validator exited with None on SIGTERM, not 0",
    ]


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


# -- verdicts and credits (`check_verdicts`) ------------------------------------------------

M1, M2 = "0x" + "a1" * 20, "0x" + "b2" * 20
RIDER, VALIDATOR = "0x" + "c3" * 20, "0x" + "d4" * 20
NAMES = {M1: "miner-1", M2: "miner-2"}
WINDOW = 5.0
REWARD = 100


def _sub(round_id: int, miner: str, **changes: Any) -> SubmissionView:
    values: dict[str, Any] = {
        "round_id": round_id,
        "miner": miner,
        "completed": True,
        "verdict": 2 if miner == RIDER else 1,
        "reason": int(Reason.NOT_BOUND) if miner == RIDER else 0,
        "validator": VALIDATOR,
        "submitted_at": 1000,
        "completed_at": 1002,
    }
    values.update(changes)
    return SubmissionView(**values)


def _journal_row(s: SubmissionView, state: str = "posted") -> dict[str, Any]:
    return {
        "round_id": s.round_id,
        "miner": s.miner,
        "state": state,
        "accepted": int(s.verdict == 1),
        "reason": s.reason,
    }


def _verdict_view(subs: list[SubmissionView], **changes: Any) -> VerdictView:
    accepted = [s for s in subs if s.verdict == 1]
    values: dict[str, Any] = {
        "submissions": subs,
        "verdict_counts": {
            r: sum(s.verdict != 0 for s in subs if s.round_id == r)
            for r in {s.round_id for s in subs}
        },
        "rewards": {s.round_id: REWARD for s in subs},
        "credits": {a: REWARD * sum(s.miner == a for s in accepted) for a in (M1, M2, RIDER)},
        "validator_nonce": sum(s.verdict != 0 for s in subs),
        "chain_time": 1100,
        "journal": [_journal_row(s) for s in subs if s.verdict != 0],
    }
    values.update(changes)
    return VerdictView(**values)


def _honest_round(round_id: int = 1) -> list[SubmissionView]:
    return [_sub(round_id, M1), _sub(round_id, M2), _sub(round_id, RIDER)]


def _verdict_check(view: VerdictView) -> tuple[list[str], dict[str, Any]]:
    findings = Findings()
    figures = check_verdicts(
        view, miners=NAMES, rider=RIDER, validator=VALIDATOR, window_s=WINDOW, findings=findings
    )
    return findings.violations, figures


def test_clean_verdicts_have_no_violation_and_their_figures() -> None:
    violations, figures = _verdict_check(_verdict_view(_honest_round(1) + _honest_round(2)))
    assert violations == []
    assert figures["accepted"] == 4 and figures["copies"] == figures["copies_rejected"] == 2
    assert figures["credits"] == {"miner-1": 200, "miner-2": 200, "free-rider": 0}
    assert figures["posted_by_validator"] == figures["validator_nonce"] == 6


def test_an_accepted_copy_is_a_violation() -> None:
    subs = _honest_round()
    subs[2] = _sub(1, RIDER, verdict=1, reason=0)
    violations, _ = _verdict_check(_verdict_view(subs))
    assert violations == ["round 1 free-rider: a copied update was accepted"]


def test_credits_that_are_not_the_accepted_rewards_are_a_violation() -> None:
    subs = _honest_round()
    twice = {M1: 2 * REWARD, M2: REWARD, RIDER: 0}
    assert _verdict_check(_verdict_view(subs, credits=twice))[0] == [
        "miner-1: credits 200, accepted work earned 100"
    ]
    paid_copy = {M1: REWARD, M2: REWARD, RIDER: 50}
    assert _verdict_check(_verdict_view(subs, credits=paid_copy))[0] == [
        "free-rider: credits 50, accepted work earned 0"
    ]


def test_a_submission_past_its_window_without_a_verdict_is_a_violation() -> None:
    subs = _honest_round()
    subs[1] = _sub(1, M2, verdict=0, reason=0, validator="0x" + "00" * 20)
    violations, _ = _verdict_check(_verdict_view(subs))
    assert violations == [
        "round 1 miner-2: no verdict 100 s after the submission (window 5 s)",
        "round 1: verdictCount 2, 3 submissions past their window",
    ]


def test_a_submission_still_inside_its_window_at_the_end_is_a_violation() -> None:
    subs = _honest_round()
    violations, _ = _verdict_check(_verdict_view(subs, chain_time=1004))
    assert "round 1 miner-1: only 4 s of chain time old at the end (window 5 s)" in violations


def test_a_verdict_counted_twice_is_a_violation() -> None:
    subs = _honest_round()
    violations, _ = _verdict_check(_verdict_view(subs, verdict_counts={1: 4}))
    assert violations == [
        "round 1: verdictCount 4, 3 submissions past their window",
        "round 1: verdictCount 4, 3 submissions carry a verdict",
    ]


def test_a_validator_nonce_above_its_verdicts_is_a_double_post() -> None:
    violations, _ = _verdict_check(_verdict_view(_honest_round(), validator_nonce=4))
    assert violations == ["validator: 4 transactions sent for 3 verdicts posted"]


def test_a_journal_row_left_unposted_or_disagreeing_is_a_violation() -> None:
    subs = _honest_round()
    rows = [_journal_row(subs[0], "signed"), _journal_row(subs[1]), _journal_row(subs[2])]
    rows[1]["accepted"], rows[1]["reason"] = 0, int(Reason.SEGMENT_MISMATCH)
    violations, _ = _verdict_check(_verdict_view(subs, journal=rows))
    assert violations == [
        "validator journal round 1 miner-1: left signed",
        "validator journal round 1 miner-2: journaled a sampled training segment did not "
        "reproduce, chain holds accepted",
        "validator: journal has 2 posted verdicts, chain 3",
    ]


def test_an_honest_rejection_for_another_reason_is_a_violation_with_the_reason() -> None:
    subs = _honest_round()
    subs[0] = _sub(1, M1, verdict=2, reason=int(Reason.SEGMENT_MISMATCH))
    view = _verdict_view(subs)
    violations, _ = _verdict_check(view)
    assert violations == [
        "round 1 miner-1: honest submission rejected: a sampled training segment did not "
        "reproduce, answered after 2 s"
    ]


def test_no_openings_for_an_answer_inside_the_window_is_a_violation() -> None:
    subs = _honest_round()
    subs[0] = _sub(1, M1, verdict=2, reason=int(Reason.NO_OPENINGS), completed_at=1005)
    violations, _ = _verdict_check(_verdict_view(subs))
    assert violations == [
        "round 1 miner-1: honest submission rejected: challenge not answered in the "
        "verification window, answered after 5 s"
    ]


def test_no_openings_for_a_late_or_missing_answer_is_counted_not_failed() -> None:
    subs = _honest_round()
    late = int(Reason.NO_OPENINGS)
    subs[0] = _sub(1, M1, verdict=2, reason=late, completed_at=1006)
    subs[1] = _sub(1, M2, verdict=2, reason=late, completed=False, completed_at=None)
    violations, figures = _verdict_check(_verdict_view(subs))
    assert violations == []
    assert (figures["answered_late"], figures["never_answered"]) == (1, 1)
    assert figures["credits"] == {"miner-1": 0, "miner-2": 0, "free-rider": 0}


def test_a_completed_task_without_its_event_is_a_violation() -> None:
    subs = _honest_round()
    subs[0] = _sub(1, M1, verdict=2, reason=int(Reason.NO_OPENINGS), completed_at=None)
    violations, _ = _verdict_check(_verdict_view(subs))
    assert violations == ["round 1 miner-1: completed on chain but no TaskCompleted event"]
