"""The validator never leaves a submission unjudged because its round closed mid-pass."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from r3mes_desktop.adapters.chain.views import RoundInfo, SubmissionInfo
from r3mes_desktop.app.validator import Validator
from r3mes_desktop.core.resilience import ServiceCaller
from r3mes_desktop.core.resilience.retry import RetryPolicy
from r3mes_desktop.core.verdicts import VerdictJournal

OTHER_VALIDATOR = "0x" + "99" * 20


def _round(round_id: int, *, is_open: bool) -> RoundInfo:
    values: dict[str, Any] = {f.name: 0 for f in fields(RoundInfo)}
    values.update(round_id=round_id, hyperparams="{}", base_model_id="m", is_open=is_open)
    return RoundInfo(**values)


def _judged(round_id: int, miner: str) -> SubmissionInfo:
    """A submission another validator has already judged: this one only settles it."""
    return SubmissionInfo(
        round_id=round_id, miner=miner, cid="bafy", gradient_hash=b"\0" * 32, pow_nonce=1,
        block_number=5, completed=True, openings_cid="bafz", verdict=1, reason=0,
        validator=OTHER_VALIDATOR,
    )  # fmt: skip


class RacingChain:
    """Round 1 takes a last submission, and closes, right after the validator lists its
    submitters: the listing it walks misses that submission."""

    miner_address = "0x" + "11" * 20

    def __init__(self) -> None:
        self.submitted = ["0x" + "a1" * 20, "0x" + "b2" * 20]
        self.open = True
        self.late = "0x" + "c3" * 20
        self.looked_at: list[str] = []

    async def last_round_id(self) -> int:
        return 1

    async def submitters(self, round_id: int, start: int) -> list[str]:
        listed = self.submitted[start:]
        if self.open:  # the last miner submits, the operator closes the round
            self.submitted.append(self.late)
            self.open = False
        return listed

    async def round_info(self, round_id: int) -> RoundInfo:
        return _round(round_id, is_open=self.open)

    async def submission_info(self, round_id: int, miner: str) -> SubmissionInfo:
        self.looked_at.append(miner)
        return _judged(round_id, miner)


async def test_a_submission_that_lands_as_its_round_closes_is_still_judged(tmp_path: Path) -> None:
    chain = RacingChain()
    journal = VerdictJournal(tmp_path / "validator.sqlite")
    calls = ServiceCaller(service="chain", policy=RetryPolicy(max_retries=0))
    validator = Validator(
        chain=chain,  # type: ignore[arg-type]
        store=None,  # type: ignore[arg-type]
        journal=journal,
        verifier=None,  # type: ignore[arg-type]
        chain_calls=calls,
        store_calls=calls,
    )
    try:
        for _ in range(2):
            await validator.pass_once()
    finally:
        journal.close()
    assert chain.late in chain.looked_at
