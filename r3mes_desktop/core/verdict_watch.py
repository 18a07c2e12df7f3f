"""The verdict watcher: what the chain's validators said of our committed submissions.

Why it looks like this:
- The journal is the source of truth. The watcher asks the chain only about committed
  transactions with no verdict yet (`Journal.awaiting_verdicts`), journals what it reads,
  and only then tells the bus (`VerdictRecorded`, and a Notice for a rejection).
- Bounded. One poll reads the chain's head once, at most `batch` submissions (the longest
  waiting first: validators work through submissions in order), and the round of each
  accepted one (its reward is the credit). A transaction still waiting backs off
  (`poll_s`, doubling up to `max_delay_s`; once overdue, `overdue_delay_s`). A backlog
  larger than one batch is read by polls `busy_poll_s` apart, each still bounded; a poll
  that finds the chain down stops there, and the next one waits longer.
- One service layer. Every read goes through the coordinator's chain `ServiceCaller`
  (retry, breaker, timeout), with no transaction id: a read about a finished transaction
  is no step of its saga, and its retries would show as attempts of a committed one.
- Overdue means the chain, read in this poll, holds no verdict while its head is
  `overdue_blocks` (a setting, read at each poll) or more past the block that mined the
  submission: a submission not read yet is never called overdue, however old. The flag is
  journaled (durably) before the Notice goes out, so each transaction is announced once,
  across restarts; more than `NOTICE_EACH` at once (a journal older than verdicts) make one
  notice naming the count.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from r3mes_desktop.core.clock import SYSTEM_CLOCK, Clock
from r3mes_desktop.core.errors import UNHEALTHY, classify
from r3mes_desktop.core.events import EventBus, Notice, VerdictRecorded
from r3mes_desktop.core.journal import Journal
from r3mes_desktop.core.polling import BackoffPoller
from r3mes_desktop.core.records import TransactionRecord
from r3mes_desktop.core.resilience import ServiceCaller
from r3mes_desktop.core.steps import SubmissionVerdict, VerdictSource
from r3mes_desktop.core.workproof import reason_text

log = logging.getLogger(__name__)

VERDICT_NAMES = {1: "accepted", 2: "rejected"}
"""The contract's verdict codes (0: none yet)."""
NOTICE_EACH = 3
"""Up to this many transactions flagged overdue in one poll get a notice each."""
SOURCE = "verdicts"


@dataclass
class PollReport:
    """What one poll did (tests and logs)."""

    checked: int = 0  # submissions read
    more_due: bool = False  # due transactions left for the next poll (the batch was full)
    recorded: list[TransactionRecord] = field(default_factory=list)
    overdue: list[TransactionRecord] = field(default_factory=list)


class VerdictWatcher(BackoffPoller):
    """Polls the chain for the verdicts of committed submissions (see the module doc);
    `poll()` once for tests, `run()` for ever in the coordinator's background."""

    def __init__(
        self,
        *,
        journal: Journal,
        chain: VerdictSource,
        calls: ServiceCaller,
        bus: EventBus,
        overdue_blocks: Callable[[], int],
        clock: Clock = SYSTEM_CLOCK,
        poll_s: float = 5.0,
        max_delay_s: float = 60.0,
        overdue_delay_s: float = 600.0,
        batch: int = 16,
        window: int = 500,
    ) -> None:
        if poll_s <= 0 or max_delay_s < poll_s or overdue_delay_s < poll_s or batch < 1:
            raise ValueError("verdict watcher: poll_s > 0, delays >= poll_s, batch >= 1")
        self.journal = journal
        self.chain = chain
        self.calls = calls
        self.bus = bus
        self.clock = clock
        self.overdue_blocks = overdue_blocks
        self.poll_s = poll_s
        self.busy_poll_s = min(1.0, poll_s)  # the next poll, while a backlog is due
        self.max_delay_s = max_delay_s
        self.overdue_delay_s = overdue_delay_s
        self.batch = batch
        self.window = window
        self._next: dict[str, tuple[float, float]] = {}  # tx id -> (due, last delay), monotonic
        self._failures = 0  # polls in a row that found the chain down
        self.what = "verdicts"

    async def poll(self) -> PollReport:
        report = PollReport()
        waiting = await self.journal.awaiting_verdicts(limit=self.window)
        ids = {rec.id for rec in waiting}
        self._next = {k: v for k, v in self._next.items() if k in ids}
        if not waiting:
            return report
        block = await self.calls.call("latest_block", self.chain.latest_block)
        head = int(block["number"])
        limit = self.overdue_blocks()
        now = self.clock.monotonic()
        due = [rec for rec in waiting if self._due(rec, now) <= now]
        # the longest waiting first: validators work through submissions in order
        due.sort(key=lambda rec: (self._due(rec, now), rec.finished_at or 0.0, rec.round_id))
        report.more_due = len(due) > self.batch
        overdue: list[str] = []
        for rec in due[: self.batch]:
            try:
                info = await self.calls.call(
                    "submission_info", self.chain.submission_info, rec.round_id, rec.miner
                )
            except Exception as exc:
                if classify(exc) in UNHEALTHY:
                    raise  # the chain is down: the rest of this poll would fail the same way
                log.warning("verdict of transaction %s unreadable: %s", rec.id, exc)
                self._back_off(rec, now, overdue=rec.verdict_overdue_at is not None)
                continue
            report.checked += 1
            if info is not None and info.verdict in VERDICT_NAMES:
                recorded = await self._record(rec, info, head)
                if recorded is not None:
                    report.recorded.append(recorded)
                self._next.pop(rec.id, None)
                continue
            # Overdue only once the chain said "no verdict": never for one just not read yet
            submitted = rec.receipt_block
            if submitted is None and info is not None:
                submitted = info.block_number  # committed without a receipt block
            late = _overdue(rec, submitted, head, limit)
            if late:
                overdue.append(rec.id)
            self._back_off(rec, now, overdue=late or rec.verdict_overdue_at is not None)
        report.overdue = await self._flag(overdue, limit)
        return report

    def _due(self, rec: TransactionRecord, now: float) -> float:
        """When `rec` is next read (now, for one never read)."""
        return self._next.get(rec.id, (now, 0.0))[0]

    def _back_off(self, rec: TransactionRecord, now: float, *, overdue: bool) -> None:
        _, last = self._next.get(rec.id, (now, 0.0))
        ceiling = self.overdue_delay_s if overdue else self.max_delay_s
        delay = min(ceiling, max(self.poll_s, last * 2))
        self._next[rec.id] = (now + delay, delay)

    async def _record(
        self, rec: TransactionRecord, info: SubmissionVerdict, head: int
    ) -> TransactionRecord | None:
        verdict = VERDICT_NAMES[info.verdict]
        credits = 0
        if verdict == "accepted":
            round_info = await self.calls.call("round_info", self.chain.round_info, rec.round_id)
            credits = rec.spec.reward if round_info is None else int(round_info.reward)
        why = reason_text(info.reason)
        note = f"accepted: +{credits} credits" if verdict == "accepted" else f"rejected: {why}"
        recorded = await self.journal.record_verdict(
            rec.id,
            verdict=verdict,
            reason=info.reason,
            credits=credits,
            block=head,
            validator=info.validator,
            now=self.clock.time(),
            note=f"{note} (validator {info.validator})",
        )
        if recorded is None:  # someone else journaled it first: nothing new to say
            return None
        log.log(
            logging.INFO if verdict == "accepted" else logging.WARNING,
            "transaction %s (round %d) %s",
            rec.id,
            rec.round_id,
            note,
        )
        self.bus.publish(
            VerdictRecorded(
                transaction_id=rec.id,
                round_id=rec.round_id,
                verdict=verdict,
                reason=info.reason,
                reason_text=why,
                credits=credits,
                block_number=head,
                validator=info.validator,
                ts=self.clock.time(),
            )
        )
        if verdict == "rejected":
            self.bus.publish(
                Notice(
                    level="warning",
                    message=f"Round {rec.round_id}: submission rejected ({why}); no credits",
                    transaction_id=rec.id,
                    source=SOURCE,
                    ts=self.clock.time(),
                )
            )
        return recorded

    async def _flag(self, overdue: list[str], limit: int) -> list[TransactionRecord]:
        if not overdue:
            return []
        what = f"submitted, no verdict after {limit} blocks"
        flagged = await self.journal.mark_verdicts_overdue(
            overdue, now=self.clock.time(), note=what
        )
        for rec in flagged:
            log.warning("transaction %s (round %d) %s", rec.id, rec.round_id, what)
        if len(flagged) > NOTICE_EACH:
            self.bus.publish(
                Notice(
                    level="warning",
                    message=f"{len(flagged)} transactions {what}",
                    source=SOURCE,
                    ts=self.clock.time(),
                )
            )
            return flagged
        for rec in flagged:
            self.bus.publish(
                Notice(
                    level="warning",
                    message=f"Round {rec.round_id}: {what}",
                    transaction_id=rec.id,
                    source=SOURCE,
                    ts=self.clock.time(),
                )
            )
        return flagged


def _overdue(rec: TransactionRecord, submitted: int | None, head: int, limit: int) -> bool:
    return rec.verdict_overdue_at is None and submitted is not None and head - submitted >= limit
