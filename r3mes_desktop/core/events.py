"""Typed core events and the callback registry that carries them.

The core publishes; the GUI bridge re-emits as Qt signals, the local API streams them as
SSE, the journal and notifier listen too. Subscribers are plain callables invoked on the
publisher's thread (the asyncio loop thread); a failing subscriber is isolated and logged.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Event:
    ts: float = field(default_factory=time.time)

    @property
    def kind(self) -> str:
        return type(self).__name__

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["kind"] = self.kind
        return data


@dataclass(frozen=True, kw_only=True)
class RetryScheduled(Event):
    """A call failed and will be tried again after `delay` seconds."""

    operation: str
    service: str | None
    attempt: int
    delay: float
    category: str
    message: str
    transaction_id: str | None = None
    max_attempts: int | None = None  # the policy's limit, so a display can say "retry 2/3"


@dataclass(frozen=True, kw_only=True)
class BreakerStateChanged(Event):
    service: str
    old_state: str
    new_state: str
    failure_count: int
    seconds_until_half_open: float | None


@dataclass(frozen=True, kw_only=True)
class EndpointSwitched(Event):
    """A fallback moved to another endpoint; indexes only, since URLs may embed API keys."""

    service: str | None
    from_index: int
    to_index: int
    endpoint_count: int
    category: str


@dataclass(frozen=True, kw_only=True)
class TransactionStateChanged(Event):
    transaction_id: str
    round_id: int
    old_state: str | None
    new_state: str
    failed_step: str | None = None
    error_category: str | None = None
    error_message: str | None = None


@dataclass(frozen=True, kw_only=True)
class StepProgress(Event):
    """Progress inside a step (training %, PoW hash rate, upload bytes)."""

    transaction_id: str
    step: str
    fraction: float
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class CompensationDone(Event):
    transaction_id: str
    action: str
    target: str


@dataclass(frozen=True, kw_only=True)
class CompensationFailed(Event):
    transaction_id: str
    action: str
    target: str
    category: str
    message: str


@dataclass(frozen=True, kw_only=True)
class Notice(Event):
    """A condition the user should see (task completion deferred, low disk, fault plan on)."""

    level: str  # "info" | "warning" | "error"
    message: str
    transaction_id: str | None = None
    source: str | None = None


@dataclass(frozen=True, kw_only=True)
class VerdictRecorded(Event):
    """A validator's verdict on one of our committed submissions, read from the chain and
    journaled: "accepted" credits the round's reward, "rejected" earns nothing."""

    transaction_id: str
    round_id: int
    verdict: str  # "accepted" | "rejected"
    reason: int  # core.workproof.Reason code (0 when accepted)
    reason_text: str
    credits: int
    block_number: int  # the chain's head when it was read
    validator: str


@dataclass(frozen=True, kw_only=True)
class ModelVersionPublished(Event):
    """A network model version read from the chain and journaled (one event per version,
    the first time this miner sees it): the chart of the network's eval loss, the fate of
    the updates of `round_id` (accepted ones went into this version)."""

    version_id: int
    round_id: int  # the closed round whose accepted updates it aggregates
    parent_id: int  # the version it was trained from
    eval_loss: float  # held-out loss, nats per token
    updates: int
    block_number: int
    aggregator: str
    current_version: int  # the chain's current version when it was read (older: a backfill)


@dataclass(frozen=True, kw_only=True)
class StatsChanged(Event):
    stats: dict[str, Any]


Subscriber = Callable[[Event], None]


class EventBus:
    """A plain callback registry: no threads, no queues, no Qt."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Register `callback`; returns a function that unsubscribes it."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def publish(self, event: Event) -> None:
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception:
                log.exception("event subscriber %r failed on %s", callback, event.kind)


@dataclass(frozen=True, kw_only=True)
class MinerStateChanged(Event):
    """The mining loop's state: idle, mining, pausing, paused, stopping."""

    old_state: str
    new_state: str
    reason: str | None = None


@dataclass(frozen=True, kw_only=True)
class GovernorStateChanged(Event):
    """The resource governor's decision changed: whether mining may run, why not (one
    plain-language reason per policy holding it back, with when it resumes where known),
    and which policies could not be evaluated (`core.governor`)."""

    may_run: bool
    summary: str
    reasons: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    devices_held: tuple[str, ...] = ()  # one reason per device held back alone (too hot)
