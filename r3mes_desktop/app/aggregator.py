"""The aggregator role: turn each closed round's accepted updates into the next model version.

Rounds are taken in order. A round is ready once it is closed and every submission to it
has a verdict; a round that trained on an older version than the current one is stale (its
updates started from other weights) and is passed over, as is a round nobody's work was
accepted in. For a ready round the accepted packages are fetched from IPFS (each checked
against its on-chain hash), averaged token-weighted in a worker process
(`adapters.mining.learning`: byte-reproducible, so anyone holding the same updates gets the
same version bytes and CID), evaluated on held-out data, and published: bytes pinned, then
`publishVersion(next id, CID, sha256, loss, round, updates)`.

Exactly once: the version is journaled (`core.versions`) before its bytes are pinned or
anything signed, its bytes kept on disk next to the journal, and the signature journaled
before its broadcast; a restarted aggregator finishes the journaled version and never
computes a second one for the round. The contract takes exactly one version per id.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import json
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from r3mes_desktop.adapters.chain.client import ChainClient
from r3mes_desktop.adapters.chain.views import VERDICT_ACCEPTED
from r3mes_desktop.adapters.mining.presets import make_plan
from r3mes_desktop.app.validator import fetch_dataset
from r3mes_desktop.core.clock import SYSTEM_CLOCK, Clock
from r3mes_desktop.core.errors import IntegrityError, R3mesError
from r3mes_desktop.core.resilience import ServiceCaller
from r3mes_desktop.core.steps import ContentStore, SignedSubmission
from r3mes_desktop.core.versions import VersionJournal, VersionRow

log = logging.getLogger(__name__)
T = TypeVar("T")


class Aggregating(Protocol):
    async def aggregate(self, job: dict[str, Any]) -> dict[str, Any]: ...


@dataclass
class AggregatorReport:
    published: list[int] = field(default_factory=list)  # version ids
    passed_over: list[tuple[int, str]] = field(default_factory=list)  # (round, why)
    waiting_for: int | None = None  # the round the next version waits on
    errors: list[str] = field(default_factory=list)


class Aggregator:
    def __init__(
        self,
        *,
        chain: ChainClient,
        store: ContentStore,
        journal: VersionJournal,
        worker: Aggregating,
        chain_calls: ServiceCaller,
        store_calls: ServiceCaller,
        blobs: Path,
        receipt_timeout_s: float = 120.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.chain = chain
        self.store = store
        self.journal = journal
        self.worker = worker
        self.chain_calls = chain_calls
        self.store_calls = store_calls
        self.blobs = blobs
        self.receipt_timeout_s = receipt_timeout_s
        self.clock = clock

    async def _chain(self, op: str, fn: Callable[..., Awaitable[T]], *args: Any, **kw: Any) -> T:
        return await self.chain_calls.call(op, functools.partial(fn, *args, **kw))

    async def pass_once(self) -> AggregatorReport:
        report = AggregatorReport()
        try:
            for row in await asyncio.to_thread(self.journal.rows, states=("decided", "signed")):
                await self._publish(row, report)
            await self._next(report)
        except R3mesError as exc:
            report.errors.append(exc.message)
            log.warning("aggregator: %s", exc.message)
        return report

    async def _next(self, report: AggregatorReport) -> None:
        current = await self._chain("currentVersion", self.chain.current_version)
        last = await self._chain("lastRoundId", self.chain.last_round_id)
        decided = {r.round_id for r in await asyncio.to_thread(self.journal.rows)}
        for round_id in range(await asyncio.to_thread(self.journal.next_round), last + 1):
            if round_id in decided:  # journaled before a crash: finished above, never redone
                await asyncio.to_thread(self.journal.seen, round_id, "published")
                continue
            info = await self._chain("getRound", self.chain.round_info, round_id)
            if info is None:
                await self._pass_over(report, round_id, "no such round")
                continue
            if info.is_open:
                report.waiting_for = round_id
                return
            if info.model_version != current:
                await self._pass_over(report, round_id, f"trained on version {info.model_version}")
                continue
            miners = await self._chain("submitters", self.chain.submitters, round_id)
            subs = [
                await self._chain("submissionOf", self.chain.submission_info, round_id, m)
                for m in miners
            ]
            if any(s is not None and not s.has_verdict for s in subs):
                report.waiting_for = round_id
                return
            accepted = [s for s in subs if s is not None and s.verdict == VERDICT_ACCEPTED]
            if not accepted:
                await self._pass_over(report, round_id, "no accepted update")
                continue
            packages = []
            for sub in accepted:
                data = await self.store_calls.call(
                    "cat", functools.partial(self.store.cat, sub.cid)
                )
                if hashlib.sha256(data).digest() != sub.gradient_hash:
                    raise IntegrityError(f"round {round_id}: {sub.cid} is not its on-chain hash")
                packages.append(data)
            params = json.loads(info.hyperparams) if info.hyperparams else {}
            params = params if isinstance(params, dict) else {}
            plan = make_plan(
                round_id=round_id,
                seed=1,
                base_model_id=info.base_model_id,
                steps=info.steps,
                hyperparams={k: v for k, v in params.items() if not k.startswith("dataset_")},
            )
            dataset = await fetch_dataset(self.store, self.store_calls, params)
            if dataset:
                plan = dataclasses.replace(plan, dataset_sha256=hashlib.sha256(dataset).hexdigest())
            result = await self.worker.aggregate(
                {"packages": packages, "plan": plan.to_json(), "dataset": dataset}
            )
            data = bytes(result["adapter"])
            cid = await asyncio.to_thread(self.store.cid_of, data)
            await asyncio.to_thread(self._keep, result["sha256"], data)
            await asyncio.to_thread(
                self.journal.decide,
                version_id=current + 1,
                round_id=round_id,
                cid=cid,
                sha256=str(result["sha256"]),
                eval_loss=float(result["eval_loss"]),
                updates=int(result["updates"]),
                now=self.clock.time(),
            )
            await asyncio.to_thread(self.journal.seen, round_id, "published")
            log.info(
                "version %d from round %d: %d updates, held-out loss %.4f",
                current + 1,
                round_id,
                result["updates"],
                result["eval_loss"],
            )
            (row,) = [
                r for r in await asyncio.to_thread(self.journal.rows) if r.version_id == current + 1
            ]
            await self._publish(row, report)
            return

    async def _pass_over(self, report: AggregatorReport, round_id: int, why: str) -> None:
        await asyncio.to_thread(self.journal.seen, round_id, why)
        report.passed_over.append((round_id, why))

    def _blob(self, sha256: str) -> Path:
        return self.blobs / f"{sha256}.safetensors"

    def _keep(self, sha256: str, data: bytes) -> None:
        self.blobs.mkdir(parents=True, exist_ok=True)
        tmp = self._blob(sha256).with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._blob(sha256))

    async def _publish(self, row: VersionRow, report: AggregatorReport) -> None:
        current = await self._chain("currentVersion", self.chain.current_version)
        if current >= row.version_id:
            found = await self._chain("versions", self.chain.version_info, row.version_id)
            ours = found is not None and found.content_hash.hex() == row.sha256
            await asyncio.to_thread(
                self.journal.finished, row.version_id, "posted" if ours else "superseded"
            )
            return
        data = await asyncio.to_thread(self._blob(row.sha256).read_bytes)
        await self.store_calls.call("add_and_pin", functools.partial(self.store.add_and_pin, data))
        if row.state == "signed" and row.signed_raw is not None and row.tx_hash is not None:
            signed = SignedSubmission(row.signed_raw, row.tx_hash, 0)
        else:
            signed = await self._chain(
                "sign publishVersion",
                self.chain.sign_call,
                "publishVersion",
                row.version_id,
                row.cid,
                bytes.fromhex(row.sha256),
                round(row.eval_loss * 1e6),
                row.round_id,
                row.updates,
                round_id=row.round_id,
            )
            await asyncio.to_thread(
                self.journal.signed, row.version_id, raw=signed.raw, tx_hash=signed.tx_hash
            )
        await self._chain("broadcast", self.chain.broadcast, signed)
        await self._chain(
            "receipt", self.chain.wait_receipt, signed.tx_hash, timeout_s=self.receipt_timeout_s
        )
        await asyncio.to_thread(self.journal.finished, row.version_id, "posted")
        report.published.append(row.version_id)
        log.info("published model version %d: %s", row.version_id, row.cid)
