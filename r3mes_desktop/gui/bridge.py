"""The one place where the core's events enter Qt, and where GUI-started tasks live.

`EventBridge` subscribes to the core `EventBus` once and re-emits every event as a Qt
signal. The hand-over always goes through a queued connection, so slots run on the GUI
thread after the publisher returns: a slow widget never stalls the coordinator, and an
event published from a worker thread is safe. No other GUI object subscribes to the core.

`TaskRunner` keeps strong references to the asyncio tasks the GUI starts (a task without a
reference can be garbage-collected mid-flight) and turns their exceptions into a signal the
window shows to the user, instead of "Task exception was never retrieved" on stderr.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from r3mes_desktop.core.events import (
    BreakerStateChanged,
    CompensationDone,
    CompensationFailed,
    Event,
    EventBus,
    GovernorStateChanged,
    MinerStateChanged,
    ModelVersionPublished,
    Notice,
    RetryScheduled,
    StatsChanged,
    StepProgress,
    TransactionStateChanged,
    VerdictRecorded,
)
from r3mes_desktop.gui.qt import QtCore, Signal, Slot

if TYPE_CHECKING:
    import asyncio

log = logging.getLogger(__name__)


class EventBridge(QtCore.QObject):
    """Core events → Qt signals on the GUI thread.

    `any_event` carries every event; the typed signals below carry the common kinds so widgets
    connect only to what they draw. Routes are keyed by the event's class (exact type: a
    subclass is a different event and gets only `event`), so a renamed or moved event
    class breaks at import time here, not silently at run time.
    """

    any_event = Signal(object)  # every event (not `event`: QObject.event() is a method)
    transaction_changed = Signal(object)  # TransactionStateChanged
    step_progress = Signal(object)  # StepProgress
    retry_scheduled = Signal(object)  # RetryScheduled
    breaker_changed = Signal(object)  # BreakerStateChanged
    compensation = Signal(object)  # CompensationDone / CompensationFailed
    notice = Signal(object)  # Notice
    stats_changed = Signal(object)  # StatsChanged
    miner_state_changed = Signal(object)  # MinerStateChanged
    verdict_recorded = Signal(object)  # VerdictRecorded
    model_version_published = Signal(object)  # ModelVersionPublished
    governor_changed = Signal(object)  # GovernorStateChanged

    _incoming = Signal(object)

    def __init__(self, bus: EventBus, parent: QtCore.QObject | None = None) -> None:
        super().__init__(parent)
        self._routes: dict[type[Event], QtCore.SignalInstance] = {
            TransactionStateChanged: self.transaction_changed,
            StepProgress: self.step_progress,
            RetryScheduled: self.retry_scheduled,
            BreakerStateChanged: self.breaker_changed,
            CompensationDone: self.compensation,
            CompensationFailed: self.compensation,
            Notice: self.notice,
            StatsChanged: self.stats_changed,
            MinerStateChanged: self.miner_state_changed,
            VerdictRecorded: self.verdict_recorded,
            ModelVersionPublished: self.model_version_published,
            GovernorStateChanged: self.governor_changed,
        }
        self._incoming.connect(self._dispatch, QtCore.Qt.ConnectionType.QueuedConnection)
        self._unsubscribe: Callable[[], None] | None = bus.subscribe(self._on_core_event)

    def _on_core_event(self, event: Event) -> None:
        # Runs on the publisher's thread; emitting is thread-safe and the connection queues.
        self._incoming.emit(event)

    @Slot(object)
    def _dispatch(self, event: Event) -> None:
        # Typed signals first (models update), then `any_event` (views that read the models).
        route = self._routes.get(type(event))
        if route is not None:
            route.emit(event)
        self.any_event.emit(event)

    def close(self) -> None:
        """Stop listening to the core (idempotent)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None


class TaskRunner(QtCore.QObject):
    """Starts coroutines from the GUI and keeps them alive until they finish.

    `failed(title, message)` is emitted when a task raises; the window shows it. Results
    go to the optional `on_done` callback, on the loop (= GUI) thread.
    """

    failed = Signal(str, str)

    def __init__(self, parent: QtCore.QObject | None = None) -> None:
        super().__init__(parent)
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def running(self) -> int:
        return len(self._tasks)

    def spawn(
        self,
        coro: Coroutine[Any, Any, Any],
        *,
        name: str,
        on_done: Callable[[Any], None] | None = None,
    ) -> asyncio.Task[Any]:
        import asyncio  # here, not at import: asyncio is not needed to paint the window

        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._finished(t, name, on_done))
        return task

    def _finished(
        self, task: asyncio.Task[Any], name: str, on_done: Callable[[Any], None] | None
    ) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("%s failed: %s", name, exc, exc_info=exc)
            self.failed.emit(name, str(exc) or type(exc).__name__)
            return
        if on_done is not None:
            try:
                on_done(task.result())
            except Exception as cb_exc:
                log.exception("%s: result handler failed", name)
                self.failed.emit(name, str(cb_exc) or type(cb_exc).__name__)

    async def cancel_all(self) -> None:
        """Cancel what is still running and wait for it (used on quit)."""
        import asyncio

        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
