"""verify_on_chain's checks and verdict with an in-memory chain and store: each way a check
can fail, be skipped for lack of input (inconclusive, never a pass), or be skipped on request."""

from __future__ import annotations

import asyncio
import hashlib

from r3mes_desktop.adapters.mining.verify import Claim, VerificationReport, verify_on_chain
from r3mes_desktop.core.cid import compute_cid
from r3mes_desktop.core.errors import PermanentError
from r3mes_desktop.core.pow import is_valid_pow
from r3mes_desktop.core.steps import OnChainSubmission, RoundSpec

MINER = "0x" + "ab" * 20
SPEC = RoundSpec(
    round_id=7, seed=1, difficulty=16, base_model_id="m", steps=2, hyperparams={"preset": "tiny"}
)
DATA = b"gradient bytes " * 40
HASH = hashlib.sha256(DATA).digest()
CID = compute_cid(DATA)


def _nonce(valid: bool) -> int:
    nonce = 0
    while is_valid_pow(HASH, MINER, SPEC.round_id, nonce, SPEC.difficulty) != valid:
        nonce += 1
    return nonce


NONCE = _nonce(True)


class Chain:
    def __init__(self, stored: OnChainSubmission | None, account: str = MINER) -> None:
        self.stored = stored
        self.miner_address = account

    async def submission_of(self, round_id: int) -> OnChainSubmission | None:
        assert round_id == SPEC.round_id
        return self.stored


class Store:
    def __init__(self, blobs: dict[str, bytes], pins: set[str], *, hang: bool = False) -> None:
        self.blobs, self.pins, self.hang = blobs, pins, hang

    async def cat(self, cid: str) -> bytes:
        if self.hang:
            await asyncio.sleep(3600)
        if cid not in self.blobs:
            raise PermanentError(f"content {cid} not found", service="ipfs")
        return self.blobs[cid]

    async def is_pinned(self, cid: str) -> bool:
        return cid in self.pins


def _stored(**changes: object) -> OnChainSubmission:
    values: dict[str, object] = {
        "round_id": SPEC.round_id,
        "miner": MINER,
        "cid": CID,
        "gradient_hash": HASH,
        "pow_nonce": NONCE,
    }
    values.update(changes)
    return OnChainSubmission(**values)  # type: ignore[arg-type]


CLAIM = Claim(round_id=SPEC.round_id, miner=MINER, cid=CID, gradient_hash=HASH, pow_nonce=NONCE)


async def _verify(
    chain: Chain, store: Store, claim: Claim = CLAIM, timeout_s: float = 5.0
) -> VerificationReport:
    return await verify_on_chain(
        chain=chain,
        store=store,
        spec=SPEC,
        claim=claim,
        recompute=False,
        fetch_timeout_s=timeout_s,
    )


def _statuses(report: VerificationReport) -> dict[str, str]:
    return {c.name: c.status for c in report.checks}


async def test_good_submission_passes_with_recompute_skipped_on_request() -> None:
    report = await _verify(Chain(_stored()), Store({CID: DATA}, {CID}))
    assert _statuses(report) == {
        "chain_record": "passed",
        "content_fetch": "passed",
        "content_cid": "passed",
        "content_sha256": "passed",
        "content_pinned": "passed",
        "proof_of_work": "passed",
        "recompute": "skipped",
    }
    assert report.verdict == "passed" and report.ok and report.pow_valid
    assert report.gradient_matches  # compared through the fetched bytes


async def test_invalid_proof_of_work_fails() -> None:
    bad = _nonce(False)
    claim = Claim(round_id=SPEC.round_id, miner=MINER, cid=CID, gradient_hash=HASH, pow_nonce=bad)
    report = await _verify(Chain(_stored(pow_nonce=bad)), Store({CID: DATA}, {CID}), claim)
    assert _statuses(report)["proof_of_work"] == "failed"
    assert report.verdict == "failed" and not report.pow_valid
    assert "does not meet the difficulty" in report.check("proof_of_work").detail


async def test_bytes_that_do_not_match_the_gradient_hash_fail() -> None:
    other = b"something else"
    other_cid = compute_cid(other)
    report = await _verify(
        Chain(_stored(cid=other_cid)), Store({other_cid: other}, {other_cid}), CLAIM
    )
    statuses = _statuses(report)
    assert statuses["chain_record"] == "failed"  # the journal sent another CID
    assert statuses["content_cid"] == "passed" and statuses["content_sha256"] == "failed"
    assert not report.gradient_matches and report.verdict == "failed"


async def test_store_serving_other_bytes_under_the_cid_fails_the_cid_check() -> None:
    report = await _verify(Chain(_stored()), Store({CID: DATA + b"x"}, {CID}))
    assert _statuses(report)["content_cid"] == "failed"
    assert _statuses(report)["content_sha256"] == "failed"


async def test_missing_content_fails_and_its_checks_are_skipped_not_passed() -> None:
    report = await _verify(Chain(_stored()), Store({}, set()))
    statuses = _statuses(report)
    assert statuses["content_fetch"] == "failed"
    assert statuses["content_cid"] == statuses["content_sha256"] == "skipped"
    assert report.verdict == "failed" and not report.gradient_matches


async def test_a_fetch_that_hangs_fails_after_the_timeout() -> None:
    report = await _verify(Chain(_stored()), Store({CID: DATA}, {CID}, hang=True), timeout_s=0.05)
    assert report.check("content_fetch").status == "failed"
    assert "not fetched within 0.05 s" in report.check("content_fetch").detail


async def test_no_record_on_chain_fails() -> None:
    report = await _verify(Chain(None), Store({CID: DATA}, {CID}))
    assert report.check("chain_record").status == "failed"
    assert "stores no submission for round 7" in report.check("chain_record").detail
    assert report.verdict == "failed"


async def test_another_account_makes_the_run_inconclusive_not_passed() -> None:
    report = await _verify(Chain(_stored(), account="0x" + "cd" * 20), Store({CID: DATA}, {CID}))
    assert report.check("chain_record").status == "skipped"
    assert not report.failed  # the journal's claim itself checks out ...
    assert report.verdict == "inconclusive" and not report.ok  # ... but it is not verified


async def test_nothing_uploaded_yet_is_inconclusive() -> None:
    claim = Claim(round_id=SPEC.round_id, miner=MINER, cid=None, gradient_hash=None, pow_nonce=None)
    report = await _verify(Chain(None, account="0x" + "cd" * 20), Store({}, set()), claim)
    assert {c.status for c in report.checks} == {"skipped"}
    assert report.verdict == "inconclusive" and not report.ok and not report.pow_valid
    text = report.describe()
    assert "passed" not in text.splitlines()[0] and text.endswith(
        "verdict: INCONCLUSIVE (0 passed, 0 failed, 7 skipped)"
    )


async def test_describe_lists_every_check_once() -> None:
    report = await _verify(Chain(_stored()), Store({CID: DATA}, {CID}))
    names = [line.split()[0] for line in report.describe().splitlines()[:-1]]
    assert names == [c.name for c in report.checks] and len(set(names)) == 7
