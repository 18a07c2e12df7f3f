"""The model-version invariants of the multi-miner part each catch what they name: a clean
chain of versions, then one fault at a time (bytes that do not reproduce, a loss that
differs, a round on a version that failed verification, two versions for one round, a
second publication, an aggregator journal left behind), and the report's lines and
failures for the aggregator."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
from typing import Any

import pytest

from bench.chaos.invariants import (
    AcceptedUpdate,
    Findings,
    LearningView,
    RoundPlan,
    VersionView,
    check_versions,
    version_plan,
)
from bench.chaos.report import failures, summary, to_markdown
from r3mes_desktop.core.cid import compute_cid
from tests.chaos.test_multi_invariants import (
    MULTI,
    RIDER_RESULT,
    VALIDATOR_RESULT,
    VERDICTS,
    _report,
)

AGGREGATOR = "0x" + "a9" * 20
M1, M2 = "0x" + "11" * 20, "0x" + "22" * 20
PLAN = RoundPlan(model_version=0, base_model_id="r3mes-devnet-lm-v1", steps=8,
                 hyperparams=json.dumps({"preset": "tiny"}))  # fmt: skip
LOSSES = {1: 5.4321234, 3: 5.1000004}  # by round: what the fake aggregation recomputes


def fake_reproduce(packages: list[bytes], plan: dict[str, Any]) -> dict[str, Any]:
    """Order-blind like `learning.aggregate_job`: the round and the sorted packages."""
    adapter = b"version of round %d:" % plan["round_id"] + b"|".join(sorted(packages))
    return {
        "adapter": adapter,
        "sha256": hashlib.sha256(adapter).hexdigest(),
        "eval_loss": LOSSES[plan["round_id"]],
        "updates": len(packages),
    }


def _update(round_id: int, miner: str) -> AcceptedUpdate:
    data = b"update of %s in round %d" % (miner.encode(), round_id)
    cid = str(compute_cid(data))
    return AcceptedUpdate(miner, cid, hashlib.sha256(data).digest(), data)


def _version(version_id: int, round_id: int, updates: list[AcceptedUpdate]) -> VersionView:
    plan = dataclasses.replace(PLAN, model_version=version_id - 1)
    made = fake_reproduce([u.stored or b"" for u in updates], version_plan(round_id, plan))
    adapter = bytes(made["adapter"])
    return VersionView(
        version_id=version_id,
        cid=str(compute_cid(adapter)),
        content_hash=hashlib.sha256(adapter).digest(),
        eval_loss_micro=round(LOSSES[round_id] * 1e6),
        parent_id=version_id - 1,
        round_id=round_id,
        updates=len(updates),
        aggregator=AGGREGATOR,
        stored=adapter,
    )


def _journal(v: VersionView, state: str = "posted") -> dict[str, Any]:
    return {"version_id": v.version_id, "round_id": v.round_id, "state": state, "cid": v.cid,
            "sha256": v.content_hash.hex()}  # fmt: skip


def _view(**changes: Any) -> LearningView:
    """Rounds 1 and 2 on version 0 (round 1 made version 1, round 2 passed over), round 3
    on version 1 (made version 2), round 4 on version 2."""
    accepted = {1: [_update(1, M1), _update(1, M2)], 3: [_update(3, M2)]}
    versions = [_version(1, 1, accepted[1]), _version(2, 3, accepted[3])]
    on = {1: 0, 2: 0, 3: 1, 4: 2}
    values: dict[str, Any] = {
        "current": 2,
        "versions": versions,
        "rounds": {r: dataclasses.replace(PLAN, model_version=v) for r, v in on.items()},
        "accepted": accepted,
        "aggregator_nonce": 2,
        "journal": [_journal(v) for v in versions],
    }
    values.update(changes)
    return LearningView(**values)


def _check(view: LearningView) -> tuple[list[str], dict[str, Any]]:
    findings = Findings()
    figures = check_versions(
        view, aggregator=AGGREGATOR, findings=findings, reproduce=fake_reproduce
    )
    return findings.violations, figures


def _replace_version(view: LearningView, index: int, **changes: Any) -> LearningView:
    versions = list(view.versions)
    versions[index] = dataclasses.replace(versions[index], **changes)
    return dataclasses.replace(view, versions=versions)


def test_a_clean_chain_of_versions_has_no_violation_and_its_figures() -> None:
    violations, figures = _check(_view())
    assert violations == []
    assert figures["versions"] == 2 and figures["reproduced"] == 2
    assert figures["losses"] == [5.432123, 5.1]
    assert figures["rounds_on_versions"] == {0: 2, 1: 1, 2: 1}
    assert figures["journal"] == {"posted": 2}


def test_the_updates_reproduce_in_any_order() -> None:
    view = _view()
    view.accepted[1].reverse()
    assert _check(view)[0] == []


def test_version_bytes_that_the_accepted_updates_do_not_reproduce_are_a_violation() -> None:
    other = b"weights from somewhere else"
    view = _replace_version(
        _view(), 0, stored=other, content_hash=hashlib.sha256(other).digest(),
        cid=str(compute_cid(other)),
    )  # fmt: skip
    view.journal[0] = _journal(view.versions[0])
    violations, figures = _check(view)
    assert violations == [
        "version 1: aggregated again from round 1's accepted updates, sha256 and bytes and "
        "CID differ"
    ]
    assert figures["reproduced"] == 1


def test_a_cid_that_is_not_the_cid_of_the_bytes_is_a_violation() -> None:
    view = _replace_version(_view(), 1, cid=str(compute_cid(b"another file")))
    view.journal[1] = _journal(view.versions[1])
    violations, _ = _check(view)
    assert violations == ["version 2: aggregated again from round 3's accepted updates, CID differ"]


def test_a_recorded_loss_off_by_more_than_a_micro_nat_is_a_violation() -> None:
    view = _replace_version(_view(), 0, eval_loss_micro=round(LOSSES[1] * 1e6) + 2)
    violations, _ = _check(view)
    assert violations == [
        "version 1: aggregated again from round 1's accepted updates, loss (5.4321234, "
        "recorded 5.432125) differ"
    ]
    assert _check(_replace_version(_view(), 0, eval_loss_micro=5432124))[0] == []


def test_an_update_whose_bytes_are_not_its_on_chain_hash_is_a_violation() -> None:
    view = _view()
    u = view.accepted[1][0]
    view.accepted[1][0] = dataclasses.replace(u, stored=b"tampered")
    assert _check(view)[0] == [
        f"version 1: {M1}'s update {u.cid} does not hash to its on-chain hash"
    ]
    view.accepted[1][0] = dataclasses.replace(u, stored=None)
    assert _check(view)[0] == [f"version 1: the daemon cannot serve {M1}'s update {u.cid}"]


def test_a_version_counting_other_updates_than_its_rounds_accepted_is_a_violation() -> None:
    view = _replace_version(_view(), 1, updates=2)
    assert _check(view)[0] == ["version 2: 2 updates recorded, round 3 has 1 accepted"]


def test_a_round_on_a_version_that_failed_verification_is_a_violation() -> None:
    view = _replace_version(_view(), 0, stored=b"not the version's bytes")
    violations, _ = _check(view)
    assert violations == [
        "version 1: the bytes under " + view.versions[0].cid + " do not hash to its contentHash",
        "round 3: trains on version 1 (failed verification)",
    ]
    missing = _replace_version(_view(), 1, stored=None)
    assert _check(missing)[0] == [
        f"version 2: the daemon cannot serve {missing.versions[1].cid}",
        "round 4: trains on version 2 (failed verification)",
    ]


def test_a_round_on_an_unpublished_version_is_a_violation() -> None:
    view = _view()
    view.rounds[5] = dataclasses.replace(PLAN, model_version=3)
    assert _check(view)[0] == ["round 5: trains on version 3 (unpublished)"]


def test_a_version_from_a_round_on_another_version_than_its_parent_is_a_violation() -> None:
    view = _view()
    view.rounds[3] = dataclasses.replace(PLAN, model_version=0)
    assert _check(view)[0] == ["version 2: round 3 trained on version 0, not its parent 1"]


def test_two_versions_for_one_round_are_a_violation() -> None:
    view = _view()
    twice = dataclasses.replace(view.versions[1], round_id=1, updates=2)
    view = dataclasses.replace(view, versions=[view.versions[0], twice])
    view.rounds[1] = PLAN
    violations, _ = _check(view)
    assert "version 2: round 1 already made version 1" in violations


def test_a_parent_that_is_not_the_previous_version_is_a_violation() -> None:
    view = _replace_version(_view(), 1, parent_id=0)
    assert "version 2: parent 0, expected 1" in _check(view)[0]


def test_an_aggregator_nonce_above_its_versions_is_a_second_publication() -> None:
    assert _check(_view(aggregator_nonce=3))[0] == [
        "aggregator: 3 transactions sent for 2 versions published"
    ]


def test_a_version_published_by_another_account_is_a_violation() -> None:
    view = _replace_version(_view(aggregator_nonce=1), 1, aggregator="0x" + "99" * 20)
    assert _check(view)[0] == [f"version 2: published by {'0x' + '99' * 20}, not the aggregator"]


def test_no_version_at_all_is_a_run_that_did_not_learn() -> None:
    view = _view(current=0, versions=[], accepted={}, aggregator_nonce=0, journal=[])
    view.rounds.update({3: PLAN, 4: PLAN})
    violations, figures = _check(view)
    assert violations == ["versions: no model version was published (the run did not learn)"]
    assert figures["losses"] == []


def test_an_aggregator_journal_left_unposted_or_disagreeing_is_a_violation() -> None:
    view = _view()
    view.journal[0] = {**view.journal[0], "state": "signed"}
    view.journal[1] = {**view.journal[1], "round_id": 4}
    view.journal.append({**view.journal[1], "version_id": 3})
    v2 = view.versions[1]
    assert _check(view)[0] == [
        "aggregator journal version 1: left signed",
        f"aggregator journal version 2: journaled round 4 {v2.cid}, chain holds round 3 {v2.cid}",
        "aggregator journal version 3: posted but the chain holds no such version",
    ]


AGGREGATOR_RESULT = {
    "address": AGGREGATOR,
    "starts": 2,
    "kills": 1,
    "killed_with": [{"decided": 1, "posted": 1}],
    "drained": True,
    "drain_s": 8.0,
    "exit_code": 0,
}
VERSIONS = {
    "versions": 2,
    "losses": [5.4321, 5.1],
    "reproduced": 2,
    "rounds_on_versions": {0: 5, 1: 3, 2: 2},
    "aggregator_nonce": 2,
    "journal": {"posted": 2},
}


def test_the_report_shows_the_versions_and_fails_on_the_aggregators_unclean_end() -> None:
    clean = {**MULTI, "invariants": {**MULTI["invariants"], "violations": []}}
    clean["result"] = {
        **MULTI["result"], "validator": VALIDATOR_RESULT, "rider": RIDER_RESULT,
        "verdicts": VERDICTS, "aggregator": AGGREGATOR_RESULT, "versions": VERSIONS,
        "rounds_closed_at_end": 1,
    }  # fmt: skip
    assert failures(_report(multi=clean)) == []
    text = to_markdown(_report(multi=clean))
    assert (
        "| model versions published / reproduced from their rounds' accepted updates | 2 / 2 |"
        in text
    )
    assert "| held-out loss of each version (nats per token) | 5.4321, 5.1000 |" in text
    assert (
        "| rounds by the model version they trained on | version 0: 5, version 1: 3, "
        "version 2: 2 |" in text
    )
    assert (
        "| aggregator SIGKILLs (its journal at each kill) / starts | 1 (decided 1, posted 1) "
        "/ 2 |" in text
    )
    assert "model versions 2 (losses [5.4321, 5.1]), aggregator kills 1" in summary(
        _report(multi=clean)
    )
    stuck = {**AGGREGATOR_RESULT, "drained": False, "exit_code": 1}
    unclean = {**clean, "result": {**clean["result"], "aggregator": stuck}}
    assert failures(_report(multi=unclean)) == [
        "multi: rounds the aggregator had not looked at, or versions it had not published, "
        "when the version drain time ran out",
        "multi: the aggregator exited with 1 on SIGTERM, not 0",
    ]


class _VersionsChain:
    """The two views `check_multi` reads for the published versions."""

    def __init__(self, cids: list[str]) -> None:
        self.cids = cids

    async def view(self, fn_name: str, *args: Any) -> Any:
        if fn_name == "currentVersion":
            return len(self.cids)
        assert fn_name == "versions"
        return (self.cids[args[0] - 1], b"", 0, 0, 0, 0, 1, AGGREGATOR)


async def test_a_published_versions_pin_is_not_an_orphan_and_a_stray_pin_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bench.chaos import invariants

    version_cid, stray = str(compute_cid(b"version 1 bytes")), str(compute_cid(b"stray"))
    monkeypatch.setattr(invariants, "collect_garbage", lambda api: "done")
    monkeypatch.setattr(invariants, "store_pins", lambda api: {version_cid, stray})
    result = types.SimpleNamespace(repo_gc="not run")
    findings = await invariants.check_multi(
        miners=[], chain=_VersionsChain([version_cid]), ipfs_api="http://unused", result=result
    )
    assert findings.violations == [
        f"pin {stray}: no miner's committed submission or published version points at it (orphan)"
    ]
