"""Turning core events into user alerts, grouped and rate-limited (no Qt).

A burst of rollbacks must give one message a person can act on ("3 transactions rolled
back in the last 5 min: IPFS unreachable"), not twenty toasts. The tray/banner in the GUI
and the Slack/email notifier each own a `NoticeCenter`; the clock is injected so tests
advance time instead of sleeping.
"""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from r3mes_desktop.core.events import (
    BreakerStateChanged,
    CompensationFailed,
    Event,
    Notice,
    TransactionStateChanged,
)

if TYPE_CHECKING:
    from r3mes_desktop.core.clock import Clock

SEVERITIES = ("info", "warning", "error", "critical")


def undo_text(action: str, target: str) -> str:
    """An undo action in words ("unpin_upload" targets a gradient hash, not a CID)."""
    if action == "unpin_upload":
        return "the upload (unpin whatever IPFS pinned)"
    return f"{action} of {target}"


def short_id(transaction_id: str) -> str:
    """The part of a transaction id people can tell apart ("mining_tx_1a2b3c4d…" → "1a2b3c4d")."""
    return transaction_id.removeprefix("mining_tx_")[:8]


def severity_rank(level: str) -> int:
    """0 for info … 3 for critical; unknown levels count as warnings."""
    level = level.lower()
    return SEVERITIES.index(level) if level in SEVERITIES else 1


@dataclass(frozen=True)
class Alert:
    level: str
    title: str
    message: str
    count: int = 1


_SERVICE_NAMES = {"ipfs": "IPFS", "chain": "the chain RPC", "task_api": "the task API"}
_STEP_SERVICE = {
    "FETCH": "ipfs",
    "IPFS_UPLOAD": "ipfs",
    "BLOCKCHAIN_SUBMIT": "chain",
    "TASK_COMPLETE": "task_api",
}


def failure_reason(failed_step: str | None, category: str | None, message: str | None) -> str:
    """A short, plain cause for a failed transaction: "IPFS unreachable"."""
    service = _STEP_SERVICE.get(failed_step or "")
    if category == "network" and service:
        return f"{_SERVICE_NAMES[service][0].upper()}{_SERVICE_NAMES[service][1:]} unreachable"
    if category == "authentication":
        return "the chain rejected the account or signature"
    if category == "resource":
        return "not enough memory or disk"
    if category == "validation" and failed_step == "BLOCKCHAIN_SUBMIT":
        return "the contract rejected the submission"
    step = (failed_step or "a step").lower().replace("_", " ")
    return f"{step} failed ({category or 'unknown'})" if not message else f"{step}: {message[:80]}"


def plain_reason(message: str) -> str:
    """Drop exception class prefixes ("ClientConnectorError: …") and keep it to one line."""
    line = (message or "unknown error").strip().splitlines()[0]
    lowered = line.lower()
    for needle in ("connection refused", "timed out", "connection reset", "name resolution"):
        if needle in lowered:
            return needle
    head, sep, tail = line.partition(": ")
    if sep and head.replace("_", "").replace(".", "").isalnum() and " " not in head:
        line = tail
    return line[:140]


def retry_text(
    *,
    service: str | None,
    operation: str,
    category: str,
    message: str,
    attempt: int,
    max_attempts: int | None,
    delay: float,
) -> str:
    """A scheduled retry in words, for a console line or a status bar:
    "IPFS unreachable (connection refused) — retry 2/3 in 4 s".

    `attempt` is the attempt that just failed, so the coming retry is retry number `attempt`
    of `max_attempts - 1` (the first attempt is not a retry)."""
    name = _SERVICE_NAMES.get(service or "", service or operation)
    what = f"{name} unreachable" if category == "network" else f"{name} failed ({category})"
    of = f"/{max_attempts - 1}" if max_attempts is not None and max_attempts > 1 else ""
    return f"{what} ({plain_reason(message)}) — retry {attempt}{of} in {max(0.0, delay):.0f} s"


class NoticeCenter:
    """Events in, grouped alerts out.

    The first alert for a (kind, reason) goes out at once; repeats within `min_interval_s`
    are held and `flush()` later reports them as one grouped alert counting every
    occurrence in the last `window_s`.
    """

    def __init__(
        self,
        *,
        window_s: float = 300.0,
        min_interval_s: float = 60.0,
        clock: Clock | None = None,
    ) -> None:
        if clock is None:  # imported here: core.clock pulls in asyncio, not needed to paint
            from r3mes_desktop.core.clock import SYSTEM_CLOCK

            clock = SYSTEM_CLOCK
        self._window = window_s
        self._interval = min_interval_s
        self._clock: Clock = clock
        self._seen: dict[tuple[str, str], deque[float]] = defaultdict(deque)
        self._last_sent: dict[tuple[str, str], float] = {}
        self._held: dict[tuple[str, str], tuple[str, str]] = {}

    def _window_text(self) -> str:
        minutes = self._window / 60
        return f"{minutes:g} min" if minutes >= 1 else f"{self._window:g} s"

    def offer(self, *, level: str, kind: str, reason: str, single: str, noun: str) -> Alert | None:
        """Record one occurrence; return an alert to show now, or None if held back."""
        key = (kind, reason)
        now = self._clock.monotonic()
        seen = self._seen[key]
        seen.append(now)
        while seen and now - seen[0] > self._window:
            seen.popleft()
        last = self._last_sent.get(key)
        if last is not None and now - last < self._interval:
            self._held[key] = (level, noun)
            return None
        self._last_sent[key] = now
        self._held.pop(key, None)
        title = f"{noun.capitalize()} {kind}" if kind else noun.capitalize()
        return Alert(level=level, title=title, message=single, count=1)

    def flush(self) -> list[Alert]:
        """Grouped alerts for occurrences held back whose quiet interval has passed."""
        now = self._clock.monotonic()
        out: list[Alert] = []
        for key, (level, noun) in list(self._held.items()):
            if now - self._last_sent.get(key, 0.0) < self._interval:
                continue
            kind, reason = key
            seen = self._seen[key]
            while seen and now - seen[0] > self._window:
                seen.popleft()
            count = max(len(seen), 1)
            plural = noun if count == 1 else f"{noun}s"
            if kind:
                text = f"{count} {plural} {kind} in the last {self._window_text()}: {reason}"
            else:
                text = f"{reason} (×{count} in the last {self._window_text()})"
            title = f"{noun.capitalize()}s {kind}".strip()
            out.append(Alert(level=level, title=title, message=text, count=count))
            self._last_sent[key] = now
            del self._held[key]
        return out

    def on_event(self, event: Event) -> Alert | None:
        """The alert an event deserves now (None if it deserves none, or is held)."""
        if isinstance(event, TransactionStateChanged):
            new_state = str(event.new_state).upper()
            if new_state not in ("ROLLED_BACK", "FAILED"):
                return None
            kind = "rolled back" if new_state == "ROLLED_BACK" else "failed"
            step = event.failed_step.upper() if event.failed_step else None
            reason = failure_reason(step, event.error_category, event.error_message)
            level = "warning" if new_state == "ROLLED_BACK" else "error"
            single = (
                f"Transaction {short_id(event.transaction_id)} (round {event.round_id}) {kind}: "
            )
            return self.offer(
                level=level, kind=kind, reason=reason, single=single + reason, noun="transaction"
            )
        if isinstance(event, BreakerStateChanged):
            if str(event.new_state).upper() != "OPEN":
                return None
            name = _SERVICE_NAMES.get(event.service, event.service)
            wait = event.seconds_until_half_open
            when = f"; next try in {wait:.0f} s" if wait is not None else ""
            single = f"Calls to {name} paused after {event.failure_count} failures{when}"
            return self.offer(
                level="warning",
                kind="opened",
                reason=event.service,
                single=single,
                noun="circuit breaker",
            )
        if isinstance(event, CompensationFailed):
            single = (
                f"Could not undo {undo_text(event.action, event.target)} for transaction "
                f"{short_id(event.transaction_id)}: {event.message}. It will be retried."
            )
            return self.offer(
                level="error",
                kind="failed",
                reason=event.action,
                single=single,
                noun="compensation",
            )
        if isinstance(event, Notice) and severity_rank(event.level) >= 1:
            return self.offer(
                level=event.level,
                kind="",
                reason=event.message,
                single=event.message,
                noun=event.source or "notice",
            )
        return None
