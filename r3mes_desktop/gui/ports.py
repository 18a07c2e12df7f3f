"""What the window needs from the runtime, typed against the core's own records.

`Runtime` satisfies these protocols structurally, and so do the widget-test fakes, which is
why they are protocols and not the concrete classes: a fake coordinator cannot be a
`Coordinator`, but it can return the same `TransactionStatus`, `DeadLetter` and
`CleanupReport` objects. The core types are imported for the type checker only: the first
paint must not import the coordinator (and with it asyncio and sqlite).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from r3mes_desktop.adapters.chain.keystore import Keystore
    from r3mes_desktop.adapters.faults import FaultInjector
    from r3mes_desktop.adapters.governor.devices import Detected
    from r3mes_desktop.core.events import EventBus
    from r3mes_desktop.core.governor import Decision
    from r3mes_desktop.core.records import (
        CleanupReport,
        DeadLetter,
        ModelVersion,
        TransactionStatus,
    )
    from r3mes_desktop.core.resilience.breaker import BreakerRegistry
    from r3mes_desktop.support.config.settings import Settings


class CoordinatorPort(Protocol):
    """The coordinator calls the window makes (a subset of `core.coordinator.Coordinator`)."""

    async def list_transactions(self) -> list[TransactionStatus]: ...

    async def status(self, transaction_id: str) -> TransactionStatus: ...

    async def statistics(self, *, window_s: float = ...) -> dict[str, Any]: ...

    async def credits_series(self, *, limit: int = ...) -> list[tuple[float, int]]: ...

    async def model_versions(self, *, limit: int = ...) -> list[ModelVersion]: ...

    async def cleanup_stale(self) -> CleanupReport: ...

    async def dead_letters(self) -> list[DeadLetter]: ...

    async def retry_dead_letter(self, letter_id: str) -> TransactionStatus: ...

    async def discard_dead_letter(self, letter_id: str) -> None: ...

    async def resumable(self) -> list[dict[str, Any]]: ...

    async def resume(self, transaction_id: str | Mapping[str, Any]) -> TransactionStatus: ...


class MinerPort(Protocol):
    """The mining loop's commands and state (`core.miner.Miner`); `state` is a MinerState,
    a StrEnum, so `str(state)` is its lower-case value."""

    @property
    def state(self) -> str: ...

    @property
    def in_flight(self) -> list[int]: ...

    async def start(self) -> None: ...

    async def pause(self) -> None: ...

    async def finish_then_stop(self) -> None: ...

    async def stop(self) -> None: ...


class RuntimePort(Protocol):
    """What the window reads from `r3mes_desktop.app.runtime.Runtime`."""

    bus: EventBus
    ready: bool
    settings: Settings | None

    @property
    def coordinator(self) -> CoordinatorPort: ...

    @property
    def miner(self) -> MinerPort: ...

    @property
    def breakers(self) -> BreakerRegistry: ...

    @property
    def faults(self) -> FaultInjector | None: ...

    @property
    def keystore(self) -> Keystore | None: ...

    @property
    def data_dir(self) -> Path: ...

    def endpoints(self) -> Mapping[str, str | None]: ...

    async def chain_info(self) -> Mapping[str, Any]: ...

    async def ipfs_info(self) -> str: ...

    def device_name(self) -> str: ...

    async def detect_devices(self) -> Detected: ...

    @property
    def governor_decision(self) -> Decision | None: ...

    def apply_settings(self, settings: Settings) -> list[str]: ...
