"""Circuit breakers, one per external service, async-native with an injected clock.

Why our own: `circuitbreaker` 2.x is async but publishes no state events and has no
half-open trial limit; `pybreaker` has listeners but no asyncio. Ours is small because
everything runs on one event loop thread: state changes happen between awaits, no locks.

Behaviour:
- CLOSED: calls pass; the last `window_size` outcomes are kept (count-based sliding
  window); when `failure_threshold` of them are failures the breaker opens.
- OPEN: calls are rejected with `CircuitOpenError(retry_after=seconds until half-open)`;
  after `open_timeout` seconds the next admission moves it to HALF_OPEN.
- HALF_OPEN: at most `half_open_max_calls` trial calls in flight; one unhealthy failure
  reopens it; `success_threshold` successes close it (with a fresh window).
- FORCED_OPEN (manual): rejects everything until `reset()`. DISABLED (manual): admits
  everything and records nothing until `reset()`.
Only UNHEALTHY categories count as failures; any other outcome (a validation error, a
rejected signature) proves the service answered and counts as a success.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any, Protocol, TypeVar

from r3mes_desktop.core.clock import SYSTEM_CLOCK, Clock
from r3mes_desktop.core.errors import UNHEALTHY, CircuitOpenError, TrialInProgressError, classify
from r3mes_desktop.core.events import BreakerStateChanged, EventBus

T = TypeVar("T")

SERVICES: tuple[str, ...] = ("chain", "ipfs", "task_api")


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    FORCED_OPEN = "forced_open"
    DISABLED = "disabled"


class BreakerSettings(Protocol):
    """The settings fields a registry is built from (support.config.Settings has them)."""

    @property
    def breaker_window_size(self) -> int: ...
    @property
    def breaker_failure_threshold(self) -> int: ...
    @property
    def breaker_open_timeout(self) -> float: ...
    @property
    def breaker_half_open_max_calls(self) -> int: ...
    @property
    def breaker_success_threshold(self) -> int: ...


@dataclass(frozen=True)
class BreakerConfig:
    window_size: int = 10
    failure_threshold: int = 5
    open_timeout: float = 30.0
    half_open_max_calls: int = 1
    success_threshold: int = 2

    def __post_init__(self) -> None:
        problems = []
        if self.window_size < 1:
            problems.append(f"window_size = {self.window_size}: accepted >= 1")
        if not 1 <= self.failure_threshold <= self.window_size:
            problems.append(
                f"failure_threshold = {self.failure_threshold}: accepted 1–window_size"
                f" ({self.window_size})"
            )
        if self.open_timeout < 0:
            problems.append(f"open_timeout = {self.open_timeout}: accepted >= 0")
        if self.half_open_max_calls < 1:
            problems.append(f"half_open_max_calls = {self.half_open_max_calls}: accepted >= 1")
        if self.success_threshold < 1:
            problems.append(f"success_threshold = {self.success_threshold}: accepted >= 1")
        if problems:
            raise ValueError("invalid breaker config: " + "; ".join(problems))

    @classmethod
    def from_settings(cls, settings: BreakerSettings) -> BreakerConfig:
        return cls(
            window_size=settings.breaker_window_size,
            failure_threshold=settings.breaker_failure_threshold,
            open_timeout=settings.breaker_open_timeout,
            half_open_max_calls=settings.breaker_half_open_max_calls,
            success_threshold=settings.breaker_success_threshold,
        )


@dataclass(frozen=True)
class BreakerSnapshot:
    """Metrics for the UI, the local API and diagnostics."""

    name: str
    state: str
    calls: int
    successes: int
    failures: int
    rejections: int
    failure_count: int  # failures in the current window
    window_size: int
    seconds_until_half_open: float | None
    last_change_ts: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class CircuitBreaker:
    """One service's breaker. Use `await breaker.call(fn, ...)` or `async with breaker.guard()`."""

    def __init__(
        self,
        name: str,
        config: BreakerConfig | None = None,
        *,
        clock: Clock = SYSTEM_CLOCK,
        bus: EventBus | None = None,
    ) -> None:
        self.name = name
        self.config = config or BreakerConfig()
        self._clock = clock
        self._bus = bus
        self._state = BreakerState.CLOSED
        self._window: collections.deque[bool] = collections.deque(maxlen=self.config.window_size)
        self._opened_at = 0.0
        self._trials_in_flight = 0
        self._trial_successes = 0
        self._trial_waiters: list[asyncio.Future[None]] = []
        self._last_change_ts: float | None = None
        self.calls = 0
        self.successes = 0
        self.failures = 0
        self.rejections = 0

    # -- state --------------------------------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        """The current state; an OPEN breaker whose timeout has passed reports HALF_OPEN."""
        if self._state is BreakerState.OPEN and self.seconds_until_half_open() == 0.0:
            self._transition(BreakerState.HALF_OPEN)
        return self._state

    @property
    def failure_count(self) -> int:
        return sum(self._window)

    def seconds_until_half_open(self) -> float | None:
        """Seconds left before trial calls are let through; None unless OPEN."""
        if self._state is not BreakerState.OPEN:
            return None
        elapsed = self._clock.monotonic() - self._opened_at
        return max(0.0, self.config.open_timeout - elapsed)

    def _transition(self, new: BreakerState) -> None:
        old = self._state
        if old is new:
            return
        self._state = new
        self._trial_successes = 0
        if new is BreakerState.OPEN:
            self._opened_at = self._clock.monotonic()
        if new in (BreakerState.CLOSED, BreakerState.HALF_OPEN):
            self._window.clear()
        if new is not BreakerState.HALF_OPEN:
            self._trials_in_flight = 0
        self._wake_trial_waiters()
        self._last_change_ts = self._clock.time()
        if self._bus is not None:
            self._bus.publish(
                BreakerStateChanged(
                    ts=self._last_change_ts,
                    service=self.name,
                    old_state=str(old),
                    new_state=str(new),
                    failure_count=self.failure_count,
                    seconds_until_half_open=self.seconds_until_half_open(),
                )
            )

    # -- manual control -------------------------------------------------------------------------

    def reset(self) -> None:
        """Back to CLOSED with an empty window (also ends FORCED_OPEN and DISABLED)."""
        self._transition(BreakerState.CLOSED)
        self._window.clear()

    def force_open(self) -> None:
        """Reject every call until `reset()` (e.g. the user paused a misbehaving service)."""
        self._transition(BreakerState.FORCED_OPEN)

    def disable(self) -> None:
        """Let every call through and record nothing until `reset()`."""
        self._transition(BreakerState.DISABLED)

    # -- admission and outcomes ----------------------------------------------------------------

    def admit(self) -> bool:
        """Admit one call or raise CircuitOpenError; returns whether it is a half-open trial.

        Every admitted call must be ended with exactly one `settle(trial, ...)`."""
        state = self.state
        if state is BreakerState.DISABLED or state is BreakerState.CLOSED:
            self.calls += 1
            return False
        if state is BreakerState.HALF_OPEN:
            if self._trials_in_flight < self.config.half_open_max_calls:
                self.calls += 1
                self._trials_in_flight += 1
                return True
            self.rejections += 1
            raise TrialInProgressError(
                f"{self.name}: circuit half-open, trial calls in progress",
                service=self.name,
                retry_after=None,
            )
        self.rejections += 1
        if state is BreakerState.FORCED_OPEN:
            raise CircuitOpenError(f"{self.name}: circuit forced open", service=self.name)
        wait = self.seconds_until_half_open()
        raise CircuitOpenError(
            f"{self.name}: circuit open, next trial in {wait:.1f}s",
            service=self.name,
            retry_after=wait,
        )

    async def trial_settled(self) -> None:
        """Return once a trial call in flight has ended (or the state has changed): the
        moment a call refused with TrialInProgressError may ask again."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._trial_waiters.append(waiter)
        try:
            await waiter
        finally:
            if waiter in self._trial_waiters:
                self._trial_waiters.remove(waiter)

    def _wake_trial_waiters(self) -> None:
        waiters, self._trial_waiters = self._trial_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _record(self, *, failed: bool, trial: bool) -> None:
        if trial:
            self._trials_in_flight = max(0, self._trials_in_flight - 1)
            self._wake_trial_waiters()
        if self._state is BreakerState.DISABLED:
            return
        if failed:
            self.failures += 1
        else:
            self.successes += 1
        if self._state is BreakerState.HALF_OPEN:
            if not trial:
                return
            if failed:
                self._transition(BreakerState.OPEN)
            else:
                self._trial_successes += 1
                if self._trial_successes >= self.config.success_threshold:
                    self._transition(BreakerState.CLOSED)
            return
        if self._state is BreakerState.CLOSED:
            self._window.append(failed)
            if self.failure_count >= self.config.failure_threshold:
                self._transition(BreakerState.OPEN)

    @contextlib.asynccontextmanager
    async def guard(self) -> AsyncIterator[None]:
        """Admit one call (or raise CircuitOpenError) and record how the body ended.

        A cancelled body frees its trial slot without counting either way.
        """
        trial = self.admit()
        try:
            yield
        except BaseException as exc:
            self.settle(trial, exc)
            raise
        self.settle(trial)

    def settle(self, trial: bool, exc: BaseException | None = None) -> None:
        """Record how an admitted call ended: `exc=None` is a success; an Exception counts as
        a failure when its category is UNHEALTHY, else as a success; anything else (a
        cancellation) frees the trial slot without counting either way.

        The plain-call form of `guard()`, for callers on a hot path (ServiceCaller)."""
        if exc is None:
            self._record(failed=False, trial=trial)
        elif isinstance(exc, Exception):
            self._record(failed=classify(exc) in UNHEALTHY, trial=trial)
        elif trial:
            self._trials_in_flight = max(0, self._trials_in_flight - 1)
            self._wake_trial_waiters()

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        async with self.guard():
            return await fn(*args, **kwargs)

    def snapshot(self) -> BreakerSnapshot:
        state = self.state
        return BreakerSnapshot(
            name=self.name,
            state=str(state),
            calls=self.calls,
            successes=self.successes,
            failures=self.failures,
            rejections=self.rejections,
            failure_count=self.failure_count,
            window_size=self.config.window_size,
            seconds_until_half_open=self.seconds_until_half_open(),
            last_change_ts=self._last_change_ts,
        )


class BreakerRegistry:
    """One breaker per service name; unknown names get a breaker with the default config."""

    def __init__(
        self,
        config: BreakerConfig | Mapping[str, BreakerConfig] | None = None,
        *,
        services: Iterable[str] = SERVICES,
        clock: Clock = SYSTEM_CLOCK,
        bus: EventBus | None = None,
    ) -> None:
        self._clock = clock
        self._bus = bus
        if isinstance(config, Mapping):
            self._configs: dict[str, BreakerConfig] = dict(config)
            self._default = BreakerConfig()
        else:
            self._configs = {}
            self._default = config or BreakerConfig()
        self._breakers: dict[str, CircuitBreaker] = {}
        for name in [*services, *self._configs]:
            self.get(name)

    @classmethod
    def from_settings(
        cls,
        settings: BreakerSettings,
        *,
        clock: Clock = SYSTEM_CLOCK,
        bus: EventBus | None = None,
    ) -> BreakerRegistry:
        return cls(BreakerConfig.from_settings(settings), clock=clock, bus=bus)

    def get(self, name: str) -> CircuitBreaker:
        breaker = self._breakers.get(name)
        if breaker is None:
            config = self._configs.get(name, self._default)
            breaker = CircuitBreaker(name, config, clock=self._clock, bus=self._bus)
            self._breakers[name] = breaker
        return breaker

    def __getitem__(self, name: str) -> CircuitBreaker:
        return self.get(name)

    def names(self) -> list[str]:
        return list(self._breakers)

    def snapshot(self) -> dict[str, BreakerSnapshot]:
        return {name: breaker.snapshot() for name, breaker in self._breakers.items()}

    def reset_all(self) -> None:
        for breaker in self._breakers.values():
            breaker.reset()
