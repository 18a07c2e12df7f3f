"""The validator role: walk the submissions, check each by sampling, post one verdict each.

A pass reads every round's submitter index from where the journal's cursor left it. For a
submission without a verdict it waits until the miner has answered the challenge (its
`completeTask` names the openings) or the verification window has passed on chain time;
then it fetches the package and openings from IPFS, checks the package's bytes against the
on-chain hash, and has a worker process recompute the sampled segments
(`adapters.mining.trace.verify`). The verdict is journaled before it is signed, and the
signature before its broadcast (`core.verdicts`).

Service calls go through one `ServiceCaller` per service (retry, breaker, timeout); the
chain client and IPFS client are plain. A failure on one submission is logged and that
submission is tried again on the next pass; the others go on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from r3mes_desktop.adapters.chain.client import ChainClient
from r3mes_desktop.adapters.chain.views import RoundInfo, SubmissionInfo
from r3mes_desktop.adapters.mining.settings import MiningConfig
from r3mes_desktop.adapters.mining.worker import plan_for
from r3mes_desktop.core import workproof
from r3mes_desktop.core.clock import SYSTEM_CLOCK, Clock
from r3mes_desktop.core.errors import R3mesError
from r3mes_desktop.core.resilience import ServiceCaller
from r3mes_desktop.core.steps import ContentStore, RoundSpec, SignedSubmission
from r3mes_desktop.core.verdicts import VerdictJournal, VerdictRow
from r3mes_desktop.core.workproof import Reason

log = logging.getLogger(__name__)
T = TypeVar("T")


class Verifier(Protocol):
    async def verify(self, job: dict[str, Any]) -> dict[str, Any]: ...


@dataclass
class PassReport:
    """What one pass did (the CLI prints it; tests assert on it)."""

    decided: int = 0
    posted: int = 0
    settled: int = 0  # another validator's verdict was on chain first
    waiting: int = 0  # inside the verification window, challenge not answered yet
    skipped: int = 0  # this validator cannot reproduce the run (another device type)
    errors: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "decided": self.decided,
            "posted": self.posted,
            "settled": self.settled,
            "waiting": self.waiting,
            "skipped": self.skipped,
            "errors": list(self.errors),
        }


class Validator:
    def __init__(
        self,
        *,
        chain: ChainClient,
        store: ContentStore,
        journal: VerdictJournal,
        verifier: Verifier,
        chain_calls: ServiceCaller,
        store_calls: ServiceCaller,
        window_s: float = 600.0,
        device: str = "cpu",
        default_preset: str = "default",
        receipt_timeout_s: float = 120.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        """`window_s`: chain seconds after a submission's block within which its miner must
        answer the challenge; past it, an unanswered submission is rejected."""
        self.chain = chain
        self.store = store
        self.journal = journal
        self.verifier = verifier
        self.chain_calls = chain_calls
        self.store_calls = store_calls
        self.window_s = window_s
        self.device = device
        self.config = MiningConfig(preset=default_preset)
        self.receipt_timeout_s = receipt_timeout_s
        self.clock = clock
        self._done_rounds: set[int] = set()  # closed, every submission settled
        self.stopping = False  # set on SIGTERM: the pass ends after the current submission

    @property
    def address(self) -> str:
        return self.chain.miner_address

    async def _chain(self, op: str, fn: Callable[..., Awaitable[T]], *args: Any, **kw: Any) -> T:
        return await self.chain_calls.call(op, functools.partial(fn, *args, **kw))

    async def _submission(self, round_id: int, miner: str) -> SubmissionInfo | None:
        return await self._chain("submissionOf", self.chain.submission_info, round_id, miner)

    # -- passes ---------------------------------------------------------------------------
    async def run(self, *, poll_s: float = 5.0, passes: int | None = None) -> None:
        """Pass after pass until cancelled (or `passes` are done)."""
        done = 0
        while passes is None or done < passes:
            report = await self.pass_once()
            done += 1
            if report.errors:
                log.warning(
                    "validator pass: %d errors (first: %s)", len(report.errors), report.errors[0]
                )
            await self.clock.sleep(poll_s)

    async def pass_once(self) -> PassReport:
        report = PassReport()
        for row in await asyncio.to_thread(
            self.journal.rows, states=("decided", "signed")
        ):  # after a crash
            await self._guarded(report, row.round_id, row.miner, self._post(row, report))
        last = await self._chain("lastRoundId", self.chain.last_round_id)
        for round_id in range(1, last + 1):
            if self.stopping:
                break
            if round_id in self._done_rounds:
                continue
            try:
                await self._round(round_id, report)
            except R3mesError as exc:
                report.errors.append(f"round {round_id}: {exc.message}")
        return report

    async def _round(self, round_id: int, report: PassReport) -> None:
        start = await asyncio.to_thread(self.journal.cursor, round_id)
        # Read before the listing: a round seen closed here takes no submission the listing
        # misses. Read after it, a submission that landed as the round closed would be
        # left unjudged for good (the round is done and never listed again).
        info = await self._chain("getRound", self.chain.round_info, round_id)
        miners = await self._chain("submitters", self.chain.submitters, round_id, start)
        settled_through = start
        all_final = True
        for offset, miner in enumerate(miners):
            if self.stopping:
                return
            final = await self._guarded(
                report, round_id, miner, self._consider(round_id, miner, report)
            )
            if final and all_final:
                settled_through = start + offset + 1
            all_final = all_final and bool(final)
        if settled_through > start:
            await asyncio.to_thread(self.journal.advance, round_id, settled_through)
        if all_final and info is not None and not info.is_open:
            self._done_rounds.add(round_id)

    async def _guarded(
        self, report: PassReport, round_id: int, miner: str, work: Awaitable[bool]
    ) -> bool:
        try:
            return await work
        except R3mesError as exc:
            report.errors.append(f"round {round_id} miner {miner}: {exc.message}")
            log.warning("round %s miner %s: %s", round_id, miner, exc.message)
            return False

    # -- one submission -------------------------------------------------------------------
    async def _consider(self, round_id: int, miner: str, report: PassReport) -> bool:
        """True once the submission has its verdict on chain (ours or another's)."""
        row = await asyncio.to_thread(self.journal.get, round_id, miner)
        if row is not None and row.state in ("posted", "settled"):
            return True
        sub = await self._submission(round_id, miner)
        if sub is None:
            return True  # not possible for an indexed submitter; nothing to judge
        if sub.has_verdict:
            if row is not None:
                await asyncio.to_thread(
                    self.journal.posted,
                    round_id,
                    miner,
                    now=self.clock.time(),
                    state=self._whose(sub),
                )
            report.settled += 1
            return True
        if row is None:
            decided = await self._decide(sub, report)
            if not decided:
                return False
            row = await asyncio.to_thread(self.journal.get, round_id, miner)
            assert row is not None
        return await self._post(row, report)

    async def _decide(self, sub: SubmissionInfo, report: PassReport) -> bool:
        started = time.perf_counter()
        if not (sub.completed and sub.openings_cid):
            if not await self._window_passed(sub):
                report.waiting += 1
                return False
            finding: dict[str, Any] = {
                "reason": int(Reason.NO_OPENINGS),
                "detail": f"no openings {self.window_s:g}s of chain time after the submission",
                "steps_recomputed": 0,
            }
        else:
            finding = await self._check(sub)
            if "cannot_verify" in finding:
                log.info("round %s miner %s: %s", sub.round_id, sub.miner, finding["cannot_verify"])
                report.skipped += 1
                return False
        await asyncio.to_thread(
            self.journal.decide,
            sub.round_id,
            sub.miner,
            accepted=finding["reason"] == Reason.ACCEPTED,
            reason=int(finding["reason"]),
            detail=str(finding["detail"]),
            steps_recomputed=int(finding.get("steps_recomputed", 0)),
            verify_s=time.perf_counter() - started,
            now=self.clock.time(),
        )
        report.decided += 1
        log.info(
            "round %s miner %s: %s (%s)",
            sub.round_id,
            sub.miner,
            workproof.reason_text(int(finding["reason"])),
            finding["detail"],
        )
        return True

    async def _window_passed(self, sub: SubmissionInfo) -> bool:
        latest = await self._chain("latest block", self.chain.latest_block)
        mined = await self._chain("block", self.chain.transport.block, sub.block_number)
        if mined is None:
            return False
        return float(latest["timestamp"]) - float(mined["timestamp"]) > self.window_s

    async def _check(self, sub: SubmissionInfo) -> dict[str, Any]:
        package = await self.store_calls.call("cat", functools.partial(self.store.cat, sub.cid))
        if hashlib.sha256(package).digest() != sub.gradient_hash:
            return {"reason": int(Reason.BAD_PACKAGE), "detail": "the CID's bytes are not the hash"}
        openings = await self.store_calls.call(
            "cat", functools.partial(self.store.cat, sub.openings_cid)
        )
        info = await self._chain("getRound", self.chain.round_info, sub.round_id)
        if info is None:
            return {"reason": int(Reason.NOT_BOUND), "detail": "no such round"}
        on_chain = await self._chain(
            "assignmentOf", self.chain.assignment_of, sub.round_id, sub.miner
        )
        mine = workproof.assignment(info.seed, sub.miner, sub.round_id)
        if on_chain != mine:
            raise R3mesError(
                f"contract assignmentOf differs from the client's rule for {sub.miner}"
            )
        block_hash = await self._chain("block", self.chain.block_hash, sub.block_number)
        if block_hash is None:
            raise R3mesError(f"block {sub.block_number} is not readable yet")
        spec = _spec(info)
        adapter = b""
        if info.model_version > 0:
            version = await self._chain("versions", self.chain.version_info, info.model_version)
            if version is None:
                raise R3mesError(f"round {info.round_id} names unknown model version")
            adapter = await self.store_calls.call(
                "cat", functools.partial(self.store.cat, version.cid)
            )
            if hashlib.sha256(adapter).digest() != version.content_hash:
                raise R3mesError(f"model version {version.version_id}: bytes are not its hash")
            spec = dataclasses.replace(
                spec,
                model_version=version.version_id,
                model_cid=version.cid,
                model_sha256=version.content_hash.hex(),
            )
        try:
            plan = plan_for(spec, self.config, sub.miner)
        except R3mesError as exc:
            return {"reason": int(Reason.BAD_PACKAGE), "detail": f"round plan: {exc.message}"}
        dataset = await fetch_dataset(self.store, self.store_calls, spec.hyperparams)
        return await self.verifier.verify(
            {
                "package": package,
                "openings": openings,
                "plan": plan.to_json(),
                "miner": sub.miner,
                "assignment": mine.hex(),
                "block_hash": block_hash.hex(),
                "device": self.device,
                "adapter": adapter,
                "dataset": dataset,
            }
        )

    # -- posting, exactly once ------------------------------------------------------------
    async def _post(self, row: VerdictRow, report: PassReport) -> bool:
        sub = await self._submission(row.round_id, row.miner)
        if sub is not None and sub.has_verdict:
            await asyncio.to_thread(
                self.journal.posted,
                row.round_id,
                row.miner,
                now=self.clock.time(),
                state=self._whose(sub),
            )
            report.settled += 1
            return True
        if row.state == "signed" and row.signed_raw is not None and row.tx_hash is not None:
            signed = SignedSubmission(row.signed_raw, row.tx_hash, 0)
        else:
            signed = await self._chain(
                "sign postVerdict",
                self.chain.sign_call,
                "postVerdict",
                row.round_id,
                row.miner,
                row.accepted,
                row.reason,
                round_id=row.round_id,
            )
            await asyncio.to_thread(
                self.journal.signed, row.round_id, row.miner, raw=signed.raw, tx_hash=signed.tx_hash
            )
        try:
            await self._chain("broadcast", self.chain.broadcast, signed)
            await self._chain(
                "receipt", self.chain.wait_receipt, signed.tx_hash, timeout_s=self.receipt_timeout_s
            )
        except R3mesError:
            sub = await self._chain(
                "submissionOf", self.chain.submission_info, row.round_id, row.miner
            )
            if sub is None or not sub.has_verdict:
                raise
        else:
            sub = await self._chain(
                "submissionOf", self.chain.submission_info, row.round_id, row.miner
            )
        state = "posted" if sub is None else self._whose(sub)
        await asyncio.to_thread(
            self.journal.posted, row.round_id, row.miner, now=self.clock.time(), state=state
        )
        if state == "posted":
            report.posted += 1
        else:
            report.settled += 1
        return True

    def _whose(self, sub: SubmissionInfo) -> str:
        return "posted" if sub.validator.lower() == self.address.lower() else "settled"


async def fetch_dataset(
    store: ContentStore, calls: ServiceCaller, hyperparams: Mapping[str, Any]
) -> bytes:
    """The text dataset a round names (b"" for the synthetic language), checked against the
    sha256 the round names; validators and aggregators read it like miners do."""
    cid, sha = hyperparams.get("dataset_cid"), hyperparams.get("dataset_sha256")
    if not cid:
        return b""
    data = await calls.call("cat", functools.partial(store.cat, str(cid)))
    if hashlib.sha256(data).hexdigest() != sha:
        raise R3mesError(f"dataset {cid}: its bytes are not the round's sha256")
    return data


def _spec(info: RoundInfo) -> RoundSpec:
    try:
        params = json.loads(info.hyperparams) if info.hyperparams else {}
    except ValueError:
        params = {}
    return RoundSpec(
        round_id=info.round_id,
        seed=info.seed,
        difficulty=info.difficulty,
        base_model_id=info.base_model_id,
        steps=info.steps,
        hyperparams=params if isinstance(params, dict) else {},
        deadline=info.deadline,
        reward=info.reward,
    )
