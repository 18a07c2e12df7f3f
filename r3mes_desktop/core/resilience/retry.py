"""Retry policies on tenacity: waits, stops, a before-sleep event, an injectable clock.

A `RetryPolicy` is a frozen value (built from settings or by hand); each call builds a fresh
tenacity engine around it so the clock, the event bus and the "retry now" gate are injected
per call and tests record delays instead of sleeping.

Rules every call follows:
- each exception is classified (`core.errors.classify`); only RETRYABLE categories are
  retried, everything else is raised at once as its classified `R3mesError`;
- when giving up, the last classified error is raised with the original as `__cause__`;
- a server-requested delay (`R3mesError.retry_after`) is honoured: the wait is
  max(policy delay, retry_after), even above `max_delay`, and a manual "retry now"
  (`RetryGate.wake`) never shortens it;
- `deadline` (seconds since the first attempt, on the injected clock) stops retrying when the
  next attempt would start at or after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, NoReturn, Protocol, TypeVar, cast, get_args

import tenacity
from tenacity.wait import wait_base

from r3mes_desktop.core.clock import SYSTEM_CLOCK, Clock
from r3mes_desktop.core.errors import R3mesError, to_r3mes_error
from r3mes_desktop.core.events import EventBus, RetryScheduled

log = logging.getLogger(__name__)

T = TypeVar("T")
WaitKind = Literal["exponential", "linear", "fixed", "fibonacci"]
WAIT_KINDS: tuple[str, ...] = get_args(WaitKind)


class RetrySettings(Protocol):
    """The settings fields a policy is built from (support.config.Settings has them)."""

    @property
    def max_retries(self) -> int: ...
    @property
    def retry_initial_delay(self) -> float: ...
    @property
    def retry_max_delay(self) -> float: ...
    @property
    def retry_backoff_factor(self) -> float: ...


class wait_fibonacci(wait_base):  # named like tenacity's own waits
    """initial * fib(n): 1, 1, 2, 3, 5, 8, 13 ... capped at `max`."""

    def __init__(self, initial: float, max: float) -> None:  # `max` as in tenacity
        self.initial = initial
        self.max = max

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        a, b = 1, 1
        for _ in range(retry_state.attempt_number - 1):
            a, b = b, a + b
            if a * self.initial >= self.max:
                break
        return min(self.initial * a, self.max)


class wait_full_jitter(wait_base):
    """Full jitter: uniform in [0, base delay], so the cap still holds."""

    def __init__(self, base: wait_base, rng: random.Random) -> None:
        self.base = base
        self.rng = rng

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        return self.rng.uniform(0.0, self.base(retry_state))


def _raise_classified(exc: Exception, service: str | None) -> NoReturn:
    """Re-raise `exc` as its classified R3mesError (the original kept as `__cause__`)."""
    error = to_r3mes_error(exc, service=service)
    if error is exc:
        raise error
    raise error from exc


@dataclass(frozen=True)
class _AttemptNumber:
    """The only field tenacity's waits read; lets `nominal_delay` reuse them directly."""

    attempt_number: int


class RetryGate:
    """A manual "retry now" the UI can pull: `wake()` ends the current waits early.

    A waiting retry is woken only down to the delay the server asked for (Retry-After):
    that part is always waited in full. A wake with nobody waiting is not remembered.
    """

    def __init__(self) -> None:
        self._events: set[asyncio.Event] = set()

    @property
    def waiting(self) -> int:
        """How many retries are waiting on this gate now."""
        return len(self._events)

    def wake(self) -> int:
        """Cut every current wait short (never below its server-requested floor)."""
        events = list(self._events)
        for event in events:
            event.set()
        return len(events)

    async def wait(self, delay: float, *, floor: float = 0.0, clock: Clock = SYSTEM_CLOCK) -> None:
        """Wait `delay` seconds on `clock`, or until woken but at least `floor` seconds."""
        start = clock.monotonic()
        event = asyncio.Event()
        self._events.add(event)
        sleeper = asyncio.ensure_future(clock.sleep(delay))
        waker = asyncio.ensure_future(event.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._events.discard(event)
            for task in (sleeper, waker):
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        if sleeper.done() and not sleeper.cancelled():
            sleeper.result()
            return
        remaining = floor - (clock.monotonic() - start)
        if remaining > 0:
            await clock.sleep(remaining)


@dataclass
class _CallState:
    """Per-call scratch shared by the wait, stop and sleep hooks."""

    start: float
    floor: float = 0.0


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry. `max_retries=3` means up to 4 attempts."""

    max_retries: int = 3
    initial_delay: float = 1.0
    backoff_factor: float = 2.0
    max_delay: float = 60.0
    wait: WaitKind = "exponential"
    jitter: bool = False
    deadline: float | None = None
    rng: random.Random | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        problems = []
        if self.max_retries < 0:
            problems.append(f"max_retries = {self.max_retries}: accepted >= 0")
        if self.initial_delay < 0:
            problems.append(f"initial_delay = {self.initial_delay}: accepted >= 0")
        if self.backoff_factor < 1:
            problems.append(f"backoff_factor = {self.backoff_factor}: accepted >= 1")
        if self.max_delay < 0:
            problems.append(f"max_delay = {self.max_delay}: accepted >= 0")
        if self.wait not in WAIT_KINDS:
            problems.append(f"wait = {self.wait!r}: accepted {', '.join(WAIT_KINDS)}")
        if self.deadline is not None and self.deadline <= 0:
            problems.append(f"deadline = {self.deadline}: accepted > 0 or None")
        if problems:
            raise ValueError("invalid retry policy: " + "; ".join(problems))

    @classmethod
    def from_settings(cls, settings: RetrySettings, **overrides: Any) -> RetryPolicy:
        """The policy the R3MES_MAX_RETRIES / R3MES_RETRY_* settings describe."""
        values: dict[str, Any] = {
            "max_retries": settings.max_retries,
            "initial_delay": settings.retry_initial_delay,
            "backoff_factor": settings.retry_backoff_factor,
            "max_delay": settings.retry_max_delay,
        }
        for name, attr in (("wait", "retry_wait"), ("jitter", "retry_jitter")):
            if hasattr(settings, attr):
                values[name] = getattr(settings, attr)
        values.update(overrides)
        return cls(**values)

    @property
    def max_attempts(self) -> int:
        return self.max_retries + 1

    def _base_wait(self) -> wait_base:
        if self.wait == "exponential":
            return tenacity.wait_exponential(
                multiplier=self.initial_delay, exp_base=self.backoff_factor, max=self.max_delay
            )
        if self.wait == "linear":
            return tenacity.wait_incrementing(
                start=self.initial_delay, increment=self.initial_delay, max=self.max_delay
            )
        if self.wait == "fixed":
            return tenacity.wait_fixed(min(self.initial_delay, self.max_delay))
        return wait_fibonacci(self.initial_delay, self.max_delay)

    def wait_strategy(self) -> wait_base:
        """The tenacity wait for this policy (jitter included, Retry-After not)."""
        base = self._base_wait()
        if self.jitter:
            return wait_full_jitter(base, self.rng or random.Random())
        return base

    def nominal_delay(self, attempt: int) -> float:
        """The delay after failed attempt number `attempt` (1-based), without jitter."""
        state = cast(tenacity.RetryCallState, _AttemptNumber(attempt))
        return float(self._base_wait()(state))

    def delays(self) -> list[float]:
        """The nominal delay sequence for all retries of this policy."""
        return [self.nominal_delay(n) for n in range(1, self.max_attempts)]

    # -- engine ------------------------------------------------------------------------------

    def _hooks(
        self,
        state: _CallState,
        now: Callable[[], float],
        *,
        operation: str,
        service: str | None,
        bus: EventBus | None,
        transaction_id: str | None,
    ) -> dict[str, Any]:
        """tenacity's wait, stop and before-sleep hooks for one call, as closures over its
        state (one function: the four hooks share `state` and read best side by side)."""
        strategy = self.wait_strategy()

        def wait(rs: tenacity.RetryCallState) -> float:
            exc = rs.outcome.exception() if rs.outcome else None
            retry_after = exc.retry_after if isinstance(exc, R3mesError) else None
            state.floor = max(0.0, retry_after or 0.0)
            return max(float(strategy(rs)), state.floor)

        def stop(rs: tenacity.RetryCallState) -> bool:
            if rs.attempt_number >= self.max_attempts:
                return True
            if self.deadline is None:
                return False
            return now() - state.start + rs.upcoming_sleep >= self.deadline

        def before_sleep(rs: tenacity.RetryCallState) -> None:
            exc = rs.outcome.exception() if rs.outcome else None
            error = exc if isinstance(exc, R3mesError) else to_r3mes_error(cast(Exception, exc))
            log.info(
                "retrying %s (%s) in %.2fs after attempt %d: %s: %s",
                operation,
                service or "-",
                rs.upcoming_sleep,
                rs.attempt_number,
                error.category,
                error.message,
            )
            if bus is not None:
                bus.publish(
                    RetryScheduled(
                        operation=operation,
                        service=service,
                        attempt=rs.attempt_number,
                        delay=rs.upcoming_sleep,
                        category=str(error.category),
                        message=error.message,
                        transaction_id=transaction_id,
                        max_attempts=self.max_attempts,
                    )
                )

        def retryable(exc: BaseException) -> bool:
            return isinstance(exc, R3mesError) and exc.retryable

        return {
            "wait": wait,
            "stop": stop,
            "before_sleep": before_sleep,
            "retry": tenacity.retry_if_exception(retryable),
            "reraise": True,
        }

    async def call_async(
        self,
        fn: Callable[..., Awaitable[T]],
        *args: Any,
        operation: str,
        service: str | None = None,
        bus: EventBus | None = None,
        clock: Clock = SYSTEM_CLOCK,
        transaction_id: str | None = None,
        gate: RetryGate | None = None,
        **kwargs: Any,
    ) -> T:
        """Await `fn(*args, **kwargs)` under this policy; raises a classified R3mesError.

        `fn` keywords named like these parameters must be bound with functools.partial.
        """
        start = clock.monotonic()
        try:  # fast path: most calls succeed first time and need no engine, no closures
            return await fn(*args, **kwargs)
        except Exception as exc:
            failed = exc
        return await self.retry_async(
            failed,
            functools.partial(fn, *args, **kwargs) if args or kwargs else fn,
            start=start,
            operation=operation,
            service=service,
            bus=bus,
            clock=clock,
            transaction_id=transaction_id,
            gate=gate,
        )

    async def retry_async(
        self,
        failed: Exception,
        fn: Callable[[], Awaitable[T]],
        *,
        start: float,
        operation: str,
        service: str | None = None,
        bus: EventBus | None = None,
        clock: Clock = SYSTEM_CLOCK,
        transaction_id: str | None = None,
        gate: RetryGate | None = None,
    ) -> T:
        """Go on with a call whose first attempt, started at `start` (`clock.monotonic()`),
        raised `failed`: classify it, and retry `fn()` under this policy if it may be.

        The callers' fast path (`call_async`, `ServiceCaller.call`) makes the first attempt
        inline; waits, attempt numbers, events and the deadline are those of a call that
        went through the engine from its first attempt."""
        first: R3mesError | None = to_r3mes_error(failed, service=service)
        assert first is not None
        if not first.retryable or self.max_attempts <= 1:
            if first is failed:
                raise first
            raise first from failed
        state = _CallState(start=start)

        async def attempt() -> T:
            nonlocal first
            if first is not None:  # tenacity counts the inline attempt as its first
                replayed, first = first, None
                if replayed is failed:
                    raise replayed
                raise replayed from failed
            try:
                return await fn()
            except Exception as exc:
                _raise_classified(exc, service)

        async def sleep(seconds: float) -> None:
            if gate is None:
                await clock.sleep(seconds)
            else:
                await gate.wait(seconds, floor=state.floor, clock=clock)

        hooks = self._hooks(
            state,
            clock.monotonic,
            operation=operation,
            service=service,
            bus=bus,
            transaction_id=transaction_id,
        )
        engine = tenacity.AsyncRetrying(sleep=sleep, **hooks)
        return await engine(attempt)

    def call(
        self,
        fn: Callable[..., T],
        *args: Any,
        operation: str,
        service: str | None = None,
        bus: EventBus | None = None,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        transaction_id: str | None = None,
        **kwargs: Any,
    ) -> T:
        """Blocking twin of `call_async`, for worker threads and processes (never the loop)."""
        state = _CallState(start=monotonic())

        def attempt() -> T:
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                _raise_classified(exc, service)

        try:  # fast path, as in call_async
            return attempt()
        except R3mesError as exc:
            if not exc.retryable or self.max_attempts <= 1:
                raise
            first: R3mesError | None = exc

        def replay_then_attempt() -> T:
            nonlocal first
            if first is not None:
                failed, first = first, None
                raise failed
            return attempt()

        hooks = self._hooks(
            state,
            monotonic,
            operation=operation,
            service=service,
            bus=bus,
            transaction_id=transaction_id,
        )
        engine = tenacity.Retrying(sleep=sleep, **hooks)
        return engine(replay_then_attempt)
