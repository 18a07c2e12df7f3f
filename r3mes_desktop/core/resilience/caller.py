"""`ServiceCaller`: the one way to call an external service.

`ServiceCaller.call` composes, from the outside in:

    retry (RetryPolicy: attempts, waits, Retry-After floor, deadline, RetryScheduled events)
      └ per attempt: breaker admission (CircuitOpenError when open)
          └ per-call timeout (expiry → TimeoutNetworkError)
              └ fn(*args, **kwargs), its exception classified (core.errors.classify)

Why this order:
- Retry outside the breaker: every attempt asks the breaker again, so an opened breaker
  stops the hammering at once; its CircuitOpenError is a retryable network error whose
  `retry_after` (time until half-open) becomes the wait floor, so the next attempt is the
  breaker's trial call rather than another rejection.
- Timeout inside the breaker: a hung peer is the unhealthiest outcome, so an expired call
  counts as a breaker failure; the timeout is per attempt (capped by what remains of the
  policy's deadline), never across the waits.
- Classification at the innermost edge: the breaker counts only UNHEALTHY categories and
  the retry retries only RETRYABLE ones, both reading the same classified error.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

from r3mes_desktop.core.clock import SYSTEM_CLOCK, Clock
from r3mes_desktop.core.errors import TimeoutNetworkError, TrialInProgressError
from r3mes_desktop.core.events import EventBus
from r3mes_desktop.core.resilience.breaker import CircuitBreaker
from r3mes_desktop.core.resilience.retry import RetryGate, RetryPolicy

T = TypeVar("T")

TimerFactory = Callable[[float], contextlib.AbstractAsyncContextManager[Any]]
"""Makes a per-call timeout scope; `asyncio.timeout` by default, `clock_timeout(clock)` in tests."""


def clock_timeout(clock: Clock) -> TimerFactory:
    """A timeout scope driven by `clock.sleep`, so tests decide when a call expires.

    Pair it with a clock whose sleep blocks until the test advances time; with
    `ManualClock` (whose sleep returns at once) every awaiting call would expire.
    """

    @contextlib.asynccontextmanager
    async def scope(seconds: float) -> AsyncIterator[None]:
        task = asyncio.current_task()
        assert task is not None, "clock_timeout must be used inside a task"
        expired = False

        async def watchdog() -> None:
            nonlocal expired
            await clock.sleep(seconds)
            expired = True
            task.cancel()

        dog = asyncio.ensure_future(watchdog())
        try:
            yield
        except asyncio.CancelledError:
            if expired and task.uncancel() == 0:
                raise TimeoutError(f"timed out after {seconds}s") from None
            raise
        finally:
            dog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await dog

    return scope


async def call_sync_in_executor(
    fn: Callable[..., T], *args: Any, executor: Executor | None = None, **kwargs: Any
) -> T:
    """Run a blocking client call off the loop (the default executor unless one is given).

    On timeout the await is abandoned but the thread runs on: blocking clients must carry
    their own socket timeout too.
    """
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(executor, functools.partial(fn, *args, **kwargs))


@dataclasses.dataclass(frozen=True, kw_only=True)
class ServiceCaller:
    """Calls one service with retry → breaker → timeout → classify (see the module doc).

    `gate` is the "retry now" the UI can pull; `timer` makes the per-call timeout scope.
    """

    service: str
    breaker: CircuitBreaker | None = None
    policy: RetryPolicy = dataclasses.field(default_factory=RetryPolicy)
    timeout_s: float | None = 30.0
    bus: EventBus | None = None
    clock: Clock = SYSTEM_CLOCK
    gate: RetryGate | None = None
    timer: TimerFactory = asyncio.timeout

    def with_options(self, **changes: Any) -> ServiceCaller:
        """A copy with other settings (e.g. a longer timeout for one big upload)."""
        return dataclasses.replace(self, **changes)

    async def call(
        self,
        operation: str,
        fn: Callable[..., Awaitable[T]],
        *args: Any,
        transaction_id: str | None = None,
        **kwargs: Any,
    ) -> T:
        """Await `fn(*args, **kwargs)`; raises a classified R3mesError when it gives up.

        The first attempt is awaited inline (no retry engine, no closures: most calls
        succeed first time); only a failure hands over to `RetryPolicy.retry_async`, which
        goes on exactly as if the engine had made that attempt."""
        start = self.clock.monotonic()
        try:
            return await self._attempt(operation, start, fn, args, kwargs)
        except Exception as exc:
            failed = exc
        return await self.policy.retry_async(
            failed,
            functools.partial(self._attempt, operation, start, fn, args, kwargs),
            start=start,
            operation=operation,
            service=self.service,
            bus=self.bus,
            clock=self.clock,
            transaction_id=transaction_id,
            gate=self.gate,
        )

    async def call_blocking(
        self,
        operation: str,
        fn: Callable[..., T],
        *args: Any,
        transaction_id: str | None = None,
        executor: Executor | None = None,
        **kwargs: Any,
    ) -> T:
        """`call` for a blocking client function, run in an executor each attempt."""
        bound = functools.partial(fn, *args, **kwargs)
        return await self.call(
            operation,
            call_sync_in_executor,
            bound,
            executor=executor,
            transaction_id=transaction_id,
        )

    def _attempt_timeout(self, start: float) -> float | None:
        deadline = self.policy.deadline
        if deadline is None:
            return self.timeout_s
        remaining = max(0.0, deadline - (self.clock.monotonic() - start))
        return remaining if self.timeout_s is None else min(self.timeout_s, remaining)

    async def _attempt(
        self,
        operation: str,
        start: float,
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> T:
        """One attempt: breaker admission, then `fn` under the per-call timeout."""
        breaker = self.breaker
        if breaker is None:
            return await self._timed(operation, start, fn, args, kwargs)
        trial = await self._admit(breaker, start)
        try:
            result = await self._timed(operation, start, fn, args, kwargs)
        except BaseException as exc:
            breaker.settle(trial, exc)
            raise
        breaker.settle(trial)
        return result

    async def _admit(self, breaker: CircuitBreaker, start: float) -> bool:
        """Admit this attempt; a refusal because the half-open trial is still running waits
        for the trial's verdict (within this attempt's time limit) and asks again.

        A service that just came back is tried by one call; every other call used to fail
        at once with "trial calls in progress" and end its transaction although the trial
        was about to succeed.
        """
        while True:
            try:
                return breaker.admit()
            except TrialInProgressError:
                limit_s = self._attempt_timeout(start)
                if limit_s is not None and limit_s <= 0:
                    raise
                try:
                    if limit_s is None:
                        await breaker.trial_settled()
                    else:
                        async with self.timer(limit_s):
                            await breaker.trial_settled()
                except TimeoutError:
                    raise TrialInProgressError(
                        f"{self.service}: circuit half-open, the trial call gave no verdict "
                        f"within {limit_s:g}s",
                        service=self.service,
                    ) from None

    async def _timed(
        self,
        operation: str,
        start: float,
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> T:
        limit_s = self._attempt_timeout(start)
        if limit_s is None:
            return await fn(*args, **kwargs)
        try:
            async with self.timer(limit_s):
                return await fn(*args, **kwargs)
        except TimeoutError as exc:
            raise TimeoutNetworkError(
                f"{operation} timed out after {limit_s:g}s", service=self.service
            ) from exc
