"""What the saga's parts share: the services and settings (`SagaContext`), the in-process
knowledge of the transactions being driven (`Scratch`), and the rules' constants.

Each service comes with the one `ServiceCaller` that owns its retry, breaker and timeout,
named after it: `store` / `store_calls`, `chain` / `chain_calls`, `task_api` / `task_calls`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from r3mes_desktop.core.clock import Clock
from r3mes_desktop.core.errors import ErrorCategory, R3mesError
from r3mes_desktop.core.events import EventBus
from r3mes_desktop.core.journal import Journal
from r3mes_desktop.core.resilience import ServiceCaller
from r3mes_desktop.core.resilience.retry import RetryPolicy
from r3mes_desktop.core.steps import (
    Chain,
    ContentStore,
    ModelStore,
    ProofOfWork,
    TaskApi,
    Trainer,
)
from r3mes_desktop.core.txstate import TxState

DEAD_LETTER_CATEGORIES = frozenset(
    {
        ErrorCategory.PERMANENT,
        ErrorCategory.AUTHENTICATION,
        ErrorCategory.NETWORK,
        ErrorCategory.RESOURCE,
    }
)
"""Final failures worth a later manual retry: the peer, the wallet or the machine may be
fixed. Validation/unknown failures are shown as failed but retrying the same input is futile."""

MAX_RESIGNS = 3
"""Signatures voided by someone else's use of the nonce that one drive replaces."""


class StepFailure(Exception):
    """An error attributed to a step other than the state it happened in (signing)."""

    def __init__(self, step: TxState, error: R3mesError) -> None:
        super().__init__(error.message)
        self.step = step
        self.error = error


@dataclass(frozen=True, kw_only=True)
class SagaContext:
    journal: Journal
    trainer: Trainer
    pow: ProofOfWork
    store: ContentStore
    store_calls: ServiceCaller
    chain: Chain
    chain_calls: ServiceCaller
    task_api: TaskApi
    task_calls: ServiceCaller
    resource_policy: RetryPolicy  # training and PoW: retried, no breaker
    undo_backoff: RetryPolicy  # waits between tries of a failed undo or outbox delivery
    bus: EventBus
    clock: Clock
    artifacts_dir: Path
    timeout_s: float
    max_gradient_bytes: int
    receipt_timeout_s: float
    models: ModelStore | None = None  # fetches the network adapter a round names
    lanes: int = 1  # device lanes: transactions that may train (+ prove) at once


@dataclass
class Scratch:
    """What this process knows about the transactions it drives, beyond the journal; lost
    with the process, and every use of it is safe without it (the journal decides)."""

    fresh_gradient: dict[str, bytes] = field(default_factory=dict)  # journaled moments ago
    learned_cid: dict[str, str] = field(default_factory=dict)
    # adds that all certainly changed nothing (refused connections, an open breaker,
    # refusals the daemon answered): nothing of theirs to undo
    adds_without_effect: set[str] = field(default_factory=set)
    training_step: dict[str, int] = field(default_factory=dict)
    resigned: dict[str, int] = field(default_factory=dict)  # void signatures replaced
    lane_released: dict[str, Callable[[], None]] = field(default_factory=dict)

    def forget(self, tx_id: str) -> None:
        for table in (
            self.fresh_gradient,
            self.learned_cid,
            self.training_step,
            self.resigned,
            self.lane_released,
        ):
            table.pop(tx_id, None)
        self.adds_without_effect.discard(tx_id)
