"""The mining coordinator: the one object the GUI, the CLI and the local API talk to.

It owns the saga, the outbox and the background maintenance, and answers every question
from the journal (so answers survive restarts). A Bulkhead bounds concurrency
(R3MES_MAX_ACTIVE_TRANSACTIONS); training + PoW is one serial lane inside the saga, so
uploads and submissions of earlier rounds overlap the next training."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from r3mes_desktop.core import artifacts
from r3mes_desktop.core.analytics import AnalyticsConfig, analyse
from r3mes_desktop.core.clock import SYSTEM_CLOCK, Clock
from r3mes_desktop.core.errors import ValidationError
from r3mes_desktop.core.events import (
    Event,
    EventBus,
    RetryScheduled,
    StatsChanged,
    TransactionStateChanged,
)
from r3mes_desktop.core.journal import Journal
from r3mes_desktop.core.logcontext import log_context
from r3mes_desktop.core.model_watch import ModelWatcher
from r3mes_desktop.core.records import (
    CleanupReport,
    DeadLetter,
    HistoryEntry,
    ModelVersion,
    RecoveryReport,
    TransactionRecord,
    TransactionStatus,
)
from r3mes_desktop.core.resilience import Bulkhead, ServiceCaller
from r3mes_desktop.core.resilience.breaker import SERVICES, BreakerRegistry
from r3mes_desktop.core.resilience.retry import RetryPolicy, RetrySettings
from r3mes_desktop.core.saga import Saga, SagaContext
from r3mes_desktop.core.saga.cleanup import close_transaction, stop_training
from r3mes_desktop.core.saga.fetching import first_step
from r3mes_desktop.core.saga.outbox import Outbox
from r3mes_desktop.core.saga.recovery import recovery_action
from r3mes_desktop.core.saga.reopen import reopen, resumable
from r3mes_desktop.core.stats import compute_statistics
from r3mes_desktop.core.steps import (
    Chain,
    ContentStore,
    ModelStore,
    ModelVersionSource,
    ProofOfWork,
    RoundSpec,
    TaskApi,
    Trainer,
    VerdictSource,
)
from r3mes_desktop.core.txstate import BEFORE_UPLOAD, TERMINAL, TxState
from r3mes_desktop.core.verdict_watch import VerdictWatcher

log = logging.getLogger(__name__)


class CoordinatorSettings(RetrySettings, Protocol):
    """The settings fields the coordinator reads (support.config.Settings has them)."""

    @property
    def transaction_timeout(self) -> float: ...
    @property
    def max_active_transactions(self) -> int: ...
    @property
    def max_gradient_size_mb(self) -> int: ...
    @property
    def stale_threshold(self) -> float: ...
    @property
    def call_timeout(self) -> float: ...
    @property
    def verdict_overdue_blocks(self) -> int: ...


class Coordinator:
    def __init__(
        self,
        *,
        journal: Journal,
        trainer: Trainer,
        pow: ProofOfWork,
        store: ContentStore,
        chain: Chain,
        task_api: TaskApi,
        settings: CoordinatorSettings,
        breakers: BreakerRegistry | None = None,
        bus: EventBus | None = None,
        clock: Clock = SYSTEM_CLOCK,
        artifacts_dir: Path | str,
        maintenance_interval_s: float = 15.0,
        sweep_interval_s: float = 300.0,
        analytics: AnalyticsConfig | None = None,
        verdicts: VerdictSource | None = None,
        verdict_poll_s: float = 5.0,
        models: ModelStore | None = None,
        versions: ModelVersionSource | None = None,
        version_poll_s: float = 10.0,
        lanes: int = 1,
    ) -> None:
        """Wire the saga's context from the parts given (its length is the list of parts:
        one place shows everything the coordinator owns and passes on)."""
        self.journal = journal
        self.settings = settings
        self.bus = bus or EventBus()
        self.clock = clock
        self.breakers = breakers or BreakerRegistry(clock=clock, bus=self.bus)
        self.policy = RetryPolicy.from_settings(settings)
        self.callers = {
            name: ServiceCaller(
                service=name,
                breaker=self.breakers.get(name),
                policy=self.policy,
                timeout_s=settings.call_timeout,
                bus=self.bus,
                clock=clock,
            )
            for name in SERVICES
        }
        self.saga = Saga(
            SagaContext(
                journal=journal,
                trainer=trainer,
                pow=pow,
                store=store,
                store_calls=self.callers["ipfs"],
                chain=chain,
                chain_calls=self.callers["chain"],
                task_api=task_api,
                task_calls=self.callers["task_api"],
                resource_policy=self.policy,
                undo_backoff=self.policy,
                bus=self.bus,
                clock=clock,
                artifacts_dir=Path(artifacts_dir),
                timeout_s=settings.transaction_timeout,
                max_gradient_bytes=settings.max_gradient_size_mb * 1024 * 1024,
                receipt_timeout_s=settings.call_timeout,
                models=models,
                lanes=lanes,
            )
        )
        self.compensator = self.saga.compensator
        self.outbox = Outbox(self.saga)
        self.bulkhead = Bulkhead(settings.max_active_transactions, name="transactions")
        self.analytics_config = analytics or AnalyticsConfig()
        self.maintenance_interval_s = maintenance_interval_s
        self.sweep_interval_s = sweep_interval_s
        # Reads the validators' verdicts on committed submissions (None: a chain without them)
        self.verdict_watch = (
            None
            if verdicts is None
            else VerdictWatcher(
                journal=journal,
                chain=verdicts,
                calls=self.callers["chain"],
                bus=self.bus,
                clock=clock,
                overdue_blocks=lambda: self.settings.verdict_overdue_blocks,
                poll_s=verdict_poll_s,
            )
        )
        # Reads the network model's versions (None: a chain without them)
        self.model_watch = (
            None
            if versions is None
            else ModelWatcher(
                journal=journal,
                chain=versions,
                calls=self.callers["chain"],
                bus=self.bus,
                clock=clock,
                poll_s=version_poll_s,
            )
        )
        self._active: dict[str, asyncio.Task[TransactionRecord]] = {}
        self._closing: set[str] = set()  # being cleaned up: no driver may start on them
        self._spawned: set[asyncio.Task[Any]] = set()
        self._writes: set[asyncio.Task[None]] = set()
        self._background: list[asyncio.Task[None]] = []
        self._unsubscribe: Callable[[], None] | None = None
        self._last_stats = float("-inf")

    # -- lifecycle ------------------------------------------------------------------------
    async def start(
        self, *, background: bool = True, check_integrity: bool = True
    ) -> RecoveryReport:
        """Open the journal, check the invariants of unfinished/recent transactions,
        reconcile every unfinished transaction, start maintenance."""
        t0 = time.perf_counter()
        await self.journal.open()
        if self._unsubscribe is None:
            self._unsubscribe = self.bus.subscribe(self._record_retry)
        problems = await self.journal.integrity_check(full=False) if check_integrity else []
        for problem in problems:
            log.error("journal integrity: %s", problem)
        strays = 0
        if not self._active:  # nothing writes gradients yet: what no one holds is a stray
            holders = await self.journal.gradient_holders()
            strays = await artifacts.remove_strays(self.saga.ctx.artifacts_dir, holders)
            if strays:
                log.info("removed %d gradient files no transaction needs", strays)
        superseded = await self.journal.supersede_settled_letters(now=self.clock.time())
        if superseded:
            log.info("closed %d dead letters of rounds committed since", superseded)
        reconciled = []
        for rec in await self.journal.unfinished():
            if rec.id in self._active:
                continue
            reconciled.append(recovery_action(rec, now=self.clock.time()))
            self._spawn(self._drive_in_slot(rec, resumed=True))
        if background and not self._background:
            self._background.append(asyncio.create_task(self._maintenance_loop()))
            self._background.append(asyncio.create_task(self._sweep_loop()))
            if self.verdict_watch is not None:
                self._background.append(asyncio.create_task(self.verdict_watch.run()))
            if self.model_watch is not None:
                self._background.append(asyncio.create_task(self.model_watch.run()))
        return RecoveryReport(
            duration_s=time.perf_counter() - t0,
            reconciled=reconciled,
            integrity_problems=problems,
            strays_removed=strays,
            letters_superseded=superseded,
        )

    async def close(self) -> None:
        """Stop background work; running transactions stay journaled for the next start."""
        for task in [*self._background, *self._spawned, *self._active.values()]:
            task.cancel()
        for task in [*self._background, *self._spawned, *self._active.values()]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._background.clear()
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        await self.journal.close()

    async def wait_idle(self) -> None:
        """Wait until every transaction started in the background (recovery, resume) ends."""
        while self._spawned:
            await asyncio.gather(*list(self._spawned), return_exceptions=True)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._spawned.add(task)
        task.add_done_callback(self._spawned.discard)
        return task

    def _record_retry(self, event: Event) -> None:
        """Journal every retry of our transactions' calls (delay and category included)."""
        if not isinstance(event, RetryScheduled) or event.transaction_id is None:
            return
        entry = HistoryEntry(
            event.transaction_id,
            self.clock.time(),
            "retry",
            step=event.operation,
            attempt=event.attempt,
            delay=event.delay,
            category=event.category,
            message=event.message,
        )
        task = asyncio.ensure_future(self.journal.append_history([entry]))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    # -- running --------------------------------------------------------------------------
    async def run_transaction(
        self, spec: RoundSpec, *, on_lane_released: Callable[[], None] | None = None
    ) -> TransactionStatus:
        """Run one round to a terminal state (or COMPENSATING) and return its status.

        `on_lane_released` fires once the training lane is free for the next round.
        """
        async with self.bulkhead.slot():
            now = self.clock.time()
            start = first_step(spec)  # FETCH when the round names files, else TRAINING
            rec = await self.journal.create(
                tx_id=f"mining_tx_{uuid.uuid4().hex}",
                spec=spec,
                miner=self.saga.miner,
                now=now,
                deadline=now + self.settings.transaction_timeout,
                start=start,
            )
            for old, new in ((None, TxState.PENDING), (TxState.PENDING, start)):
                self.bus.publish(
                    TransactionStateChanged(
                        transaction_id=rec.id,
                        round_id=rec.round_id,
                        old_state=None if old is None else old.value,
                        new_state=new.value,
                        ts=now,
                    )
                )
            rec = await self._drive(rec, on_lane_released=on_lane_released)
        return await self.status(rec.id)

    async def _drive(
        self,
        rec: TransactionRecord,
        *,
        resumed: bool = False,
        on_lane_released: Callable[[], None] | None = None,
    ) -> TransactionRecord:
        if rec.id in self._active:
            raise ValidationError(f"transaction {rec.id} is already running")
        if rec.id in self._closing:
            raise ValidationError(f"transaction {rec.id} is being cleaned up")
        with log_context(transaction_id=rec.id, round_id=rec.round_id):
            task = asyncio.ensure_future(  # the task copies the context: its logs are tagged
                self.saga.drive(rec, resumed=resumed, on_lane_released=on_lane_released)
            )
        self._active[rec.id] = task
        try:
            return await task
        finally:
            self._active.pop(rec.id, None)
            await self._maybe_publish_stats()

    async def _drive_in_slot(
        self, rec: TransactionRecord, *, resumed: bool
    ) -> TransactionRecord | None:
        """Drive `rec` once a bulkhead slot is free; None if, by then, another driver runs
        or has finished it. Recovery and the maintenance pass can both pick the same
        transaction while they wait: driving the stale copy would redo its effects (an
        upload after the undo: an orphan pin) before its commit was refused."""
        async with self.bulkhead.slot():
            current = await self.journal.get(rec.id)
            if current is None or current.state in TERMINAL or self._busy(rec.id):
                return None
            return await self._drive(current, resumed=resumed)

    async def _maybe_publish_stats(self) -> None:
        now = self.clock.monotonic()
        if now - self._last_stats < 1.0:
            return
        self._last_stats = now
        try:
            self.bus.publish(StatsChanged(stats=await self.statistics(), ts=self.clock.time()))
        except Exception:
            log.exception("publishing statistics failed")

    # -- queries --------------------------------------------------------------------------
    async def _record(self, transaction_id: str) -> TransactionRecord:
        rec = await self.journal.get(transaction_id)
        if rec is None:
            raise ValidationError(f"transaction_id {transaction_id!r} is not in the journal")
        return rec

    async def status(self, transaction_id: str) -> TransactionStatus:
        rec, history = await self.journal.snapshot(transaction_id)
        if rec is None:
            raise ValidationError(f"transaction_id {transaction_id!r} is not in the journal")
        (status,) = await self.journal.statuses([rec], now=self.clock.time(), history=history)
        return status

    async def list_transactions(
        self, *, states: Iterable[TxState | str] | None = None, limit: int = 200
    ) -> list[TransactionStatus]:
        if limit < 1 or limit > 100_000:
            raise ValidationError(f"limit = {limit}: accepted 1..100000")
        wanted = None if states is None else [TxState(s) for s in states]
        records = await self.journal.list_transactions(states=wanted, limit=limit)
        return await self.journal.statuses(records, now=self.clock.time())

    async def statistics(self, *, window_s: float = 3600) -> dict[str, Any]:
        if window_s <= 0:
            raise ValidationError(f"window_s = {window_s}: accepted > 0 seconds")
        now = self.clock.time()
        return await self.journal.run(
            lambda conn: compute_statistics(conn, now=now, window_s=window_s)
        )

    async def credits_series(self, *, limit: int = 500) -> list[tuple[float, int]]:
        """(when read, total credits by then) of the latest `limit` verdicts, oldest first."""
        if not 1 <= limit <= 100_000:
            raise ValidationError(f"limit = {limit}: accepted 1..100000")
        return await self.journal.credits_series(limit=limit)

    async def model_versions(self, *, limit: int = 500) -> list[ModelVersion]:
        """The newest `limit` network model versions journaled, oldest first."""
        if not 1 <= limit <= 100_000:
            raise ValidationError(f"limit = {limit}: accepted 1..100000")
        return await self.journal.model_versions(limit=limit)

    async def error_analysis(self) -> dict[str, Any]:
        now, config = self.clock.time(), self.analytics_config
        return await self.journal.run(lambda conn: analyse(conn, now=now, config=config))

    # -- maintenance ----------------------------------------------------------------------
    async def deliver_outbox(self) -> int:
        """Deliver due task completions once (the background loop calls this)."""
        return await self.outbox.deliver_due(skip=self._busy)

    async def retry_compensations(self) -> int:
        """Retry due undo actions once (the background loop calls this)."""
        return await self.compensator.retry_due(skip=self._busy)

    async def settle_in_doubt(self) -> int:
        """Re-drive submissions parked in doubt whose next try is due (see `Saga.in_doubt`);
        the background loop calls this. Returns how many were driven."""
        now = self.clock.time()
        driven = 0
        for rec in await self.journal.unfinished():
            if (
                rec.state is not TxState.BLOCKCHAIN_SUBMIT
                or rec.id in self._active
                or rec.next_retry_at is None
                or rec.next_retry_at > now
            ):
                continue
            if await self._drive_in_slot(rec, resumed=True) is not None:
                driven += 1
        return driven

    async def _maintenance_loop(self) -> None:
        while True:
            for job in (self.deliver_outbox, self.retry_compensations, self.settle_in_doubt):
                try:
                    await job()
                except Exception:
                    log.exception("maintenance job %s failed", job.__name__)
            await self.clock.sleep(self.maintenance_interval_s)

    async def _sweep_loop(self) -> None:
        while True:
            await self.clock.sleep(self.sweep_interval_s)
            try:
                report = await self.cleanup_stale()
                if report.count:
                    log.warning("stale sweep closed %d transactions", report.count)
            except Exception:
                log.exception("stale sweep failed")

    def _busy(self, transaction_id: str) -> bool:
        """Someone is driving or closing it: nobody else may touch it now."""
        return transaction_id in self._active or transaction_id in self._closing

    @contextlib.asynccontextmanager
    async def _closing_one(self, transaction_id: str) -> AsyncIterator[None]:
        """Hold off every driver (recovery, maintenance, resume) while `transaction_id` is
        closed, and stop the one running it: a driver starting between the read and the
        close would move the transaction under the cleanup's feet."""
        self._closing.add(transaction_id)
        try:
            task = self._active.get(transaction_id)
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            yield
        finally:
            self._closing.discard(transaction_id)

    async def cleanup_stale(self, *, older_than_s: float | None = None) -> CleanupReport:
        """Close every unfinished transaction older than the threshold (default
        R3MES_STALE_THRESHOLD), reconciling with the chain first; says what it did."""
        threshold = self.settings.stale_threshold if older_than_s is None else older_than_s
        if threshold < 0:
            raise ValidationError(f"older_than_s = {threshold}: accepted >= 0 seconds")
        now = self.clock.time()
        cleaned = []
        for rec in await self.journal.unfinished():
            age = now - rec.created_at
            if age < threshold:
                continue
            async with self._closing_one(rec.id):
                fresh = await self._record(rec.id)
                if fresh.state in TERMINAL:
                    continue
                reason = f"stale: {fresh.state.value} for {age:.0f}s (threshold {threshold:g}s)"
                cleaned.append(await close_transaction(self.saga, fresh, reason=reason))
        return CleanupReport(checked_at=now, older_than_s=threshold, cleaned=cleaned)

    async def stop_closed_round(self, round_id: int) -> list[str]:
        """The chain no longer offers `round_id` to this miner while it trains (the operator
        closed it, or another rig on the same key submitted to it): nothing this training
        makes can be submitted, so stop it now and end it FAILED with the reason. No dead
        letter: a retry cannot reopen a round. Transactions past training are left alone
        (their submission is already settled or being settled by the chain). Returns the
        ids of the transactions stopped."""
        stopped: list[str] = []
        for rec in await self.journal.unfinished():
            if rec.round_id != round_id or rec.state not in BEFORE_UPLOAD:
                continue
            reason = f"round {round_id} was closed on chain before its training finished"
            async with self._closing_one(rec.id):
                fresh = await self._record(rec.id)
                if fresh.state not in BEFORE_UPLOAD:
                    continue
                await stop_training(self.saga, fresh, reason=reason)
            stopped.append(rec.id)
        return stopped

    async def force_cleanup(self, transaction_id: str) -> CleanupReport:
        """Close one transaction now, whatever its age (stops it if it is running)."""
        async with self._closing_one(transaction_id):
            rec = await self._record(transaction_id)
            now = self.clock.time()
            if rec.state in TERMINAL:
                return CleanupReport(checked_at=now, older_than_s=0.0)
            entry = await close_transaction(self.saga, rec, reason="force-cleaned by the user")
        return CleanupReport(checked_at=now, older_than_s=0.0, cleaned=[entry])

    # -- dead letters and resume ----------------------------------------------------------
    async def dead_letters(self) -> list[DeadLetter]:
        return await self.journal.dead_letters()

    async def _letter(self, letter_id: str) -> DeadLetter:
        found = await self.journal.dead_letters(status="open", dl_id=str(letter_id))
        if not found:
            raise ValidationError(f"dead letter {letter_id!r} is not an open dead letter")
        return found[0]

    async def _reopen(self, rec: TransactionRecord, note: str) -> TransactionRecord:
        return await reopen(self.saga, rec, note=note, timeout_s=self.settings.transaction_timeout)

    async def retry_dead_letter(self, letter_id: str) -> TransactionStatus:
        letter = await self._letter(letter_id)
        rec = await self._reopen(
            await self._record(letter.transaction_id), "retried from dead letter"
        )
        await self.journal.resolve_dead_letter(letter.id, status="retried", now=self.clock.time())
        async with self.bulkhead.slot():
            rec = await self._drive(rec)
        return await self.status(rec.id)

    async def discard_dead_letter(self, letter_id: str) -> None:
        letter = await self._letter(letter_id)
        # the journal releases the gradient with the letter (row and file)
        await self.journal.resolve_dead_letter(letter.id, status="discarded", now=self.clock.time())
        rec = await self._record(letter.transaction_id)
        if rec.state in TERMINAL and rec.state is not TxState.COMMITTED:
            with contextlib.suppress(Exception):
                await self.saga.ctx.trainer.discard_checkpoints(rec.id)

    async def resumable(self) -> list[dict[str, Any]]:
        """Transactions a resume can continue: failed in training (checkpoint kept) or
        unfinished and not running."""
        return await resumable(self.journal, running=set(self._active), now=self.clock.time())

    async def resume(self, transaction_id: str | Mapping[str, Any]) -> TransactionStatus:
        tx_id = (
            str(transaction_id["transaction_id"])
            if isinstance(transaction_id, Mapping)
            else str(transaction_id)
        )
        rec = await self._record(tx_id)
        if rec.state in TERMINAL:
            rec = await self._reopen(rec, "resumed by the user")
        async with self.bulkhead.slot():
            rec = await self._drive(rec, resumed=True)
        return await self.status(rec.id)
