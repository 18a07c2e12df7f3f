"""The inline first attempt of ServiceCaller.call and RetryPolicy.call_async: a failure
hands over to the retry engine and everything after it is as if the engine had made the
first attempt (delays, attempt numbers, events, deadline, breaker accounting)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from r3mes_desktop.core.clock import ManualClock
from r3mes_desktop.core.errors import (
    CircuitOpenError,
    NetworkError,
    TimeoutNetworkError,
    ValidationError,
)
from r3mes_desktop.core.events import Event, EventBus, RetryScheduled
from r3mes_desktop.core.resilience import ServiceCaller, clock_timeout
from r3mes_desktop.core.resilience.breaker import BreakerConfig, BreakerState, CircuitBreaker
from r3mes_desktop.core.resilience.retry import RetryPolicy
from tests.helpers.clocks import SteppedClock, settle


class Flaky:
    """Raises the given exceptions in turn, then returns its arguments; records each call."""

    def __init__(self, *failures: BaseException, suspend: bool = False) -> None:
        self.failures = list(failures)
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        self.suspend = suspend

    async def __call__(self, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        self.calls.append((args, kwargs))
        if self.suspend:
            await asyncio.sleep(0)
        if self.failures:
            raise self.failures.pop(0)
        return args


def retries(bus: EventBus) -> list[RetryScheduled]:
    events: list[RetryScheduled] = []

    def keep(event: Event) -> None:
        if isinstance(event, RetryScheduled):
            events.append(event)

    bus.subscribe(keep)
    return events


@pytest.mark.parametrize("suspend", [False, True])
async def test_a_failed_first_attempt_is_retried_after_the_configured_delay(
    suspend: bool,
) -> None:
    clock, bus = ManualClock(), EventBus()
    events = retries(bus)
    breaker = CircuitBreaker("ipfs", clock=clock)
    caller = ServiceCaller(
        service="ipfs",
        breaker=breaker,
        policy=RetryPolicy(initial_delay=3, backoff_factor=2),
        bus=bus,
        clock=clock,
    )
    fn = Flaky(ConnectionError("refused"), ConnectionError("reset"), suspend=suspend)

    assert await caller.call("add", fn, b"data", transaction_id="tx1", pin=True) == (b"data",)

    assert clock.sleeps == [3, 6]
    assert fn.calls == [((b"data",), {"pin": True})] * 3
    assert [(e.attempt, e.delay, e.operation, e.transaction_id) for e in events] == [
        (1, 3, "add", "tx1"),
        (2, 6, "add", "tx1"),
    ]
    assert (breaker.calls, breaker.failures, breaker.successes) == (3, 2, 1)


async def test_a_failed_first_attempt_that_is_not_retryable_is_raised_classified() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker("chain", clock=clock)
    caller = ServiceCaller(service="chain", breaker=breaker, clock=clock)
    cause = ValueError("bad input")

    with pytest.raises(ValidationError) as info:
        await caller.call("sign", Flaky(cause))

    assert info.value.__cause__ is cause
    assert info.value.service == "chain"
    assert clock.sleeps == []
    # the service answered: a success for the breaker
    assert (breaker.failures, breaker.successes) == (0, 1)


async def test_the_breaker_opens_on_failed_first_attempts_and_stops_the_next_call() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(
        "ipfs", BreakerConfig(window_size=2, failure_threshold=2, open_timeout=10), clock=clock
    )
    caller = ServiceCaller(
        service="ipfs", breaker=breaker, policy=RetryPolicy(max_retries=0), clock=clock
    )
    for _ in range(2):
        with pytest.raises(NetworkError):
            await caller.call("add", Flaky(ConnectionError("refused")))
    assert breaker.state is BreakerState.OPEN

    fn = Flaky()
    with pytest.raises(CircuitOpenError):
        await caller.call("add", fn)
    assert fn.calls == []
    assert breaker.rejections == 1


async def test_the_per_call_timeout_still_fires_on_the_first_attempt() -> None:
    clock = SteppedClock()
    breaker = CircuitBreaker("chain", clock=clock)
    caller = ServiceCaller(
        service="chain",
        breaker=breaker,
        policy=RetryPolicy(max_retries=1, initial_delay=2),
        timeout_s=5,
        clock=clock,
        timer=clock_timeout(clock),
    )
    answers = iter([asyncio.Event().wait, lambda: asyncio.sleep(0, "late but fine")])

    async def first_hangs() -> Any:
        return await next(answers)()

    task = asyncio.create_task(caller.call("receipt", first_hangs))
    await settle()
    await clock.advance(5)  # the first attempt times out; the retry waits 2 s
    assert not task.done()
    await clock.advance(2)
    assert await task == "late but fine"
    assert clock.sleeps == [5, 2, 5]  # timeout, retry wait, the second attempt's timeout
    assert (breaker.failures, breaker.successes) == (1, 1)


async def test_the_deadline_counts_from_the_first_attempt() -> None:
    clock = ManualClock()

    async def slow_failure() -> None:
        clock.advance(8)  # the first attempt takes 8 of the 10 s
        raise ConnectionError("refused")

    caller = ServiceCaller(
        service="ipfs",
        policy=RetryPolicy(initial_delay=3, deadline=10),
        timeout_s=None,
        clock=clock,
    )
    with pytest.raises(NetworkError):
        await caller.call("add", slow_failure)
    assert clock.sleeps == []  # 8 s + a 3 s wait would cross the deadline: no retry


async def test_a_cancelled_half_open_trial_frees_its_slot() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(
        "chain", BreakerConfig(window_size=1, failure_threshold=1, open_timeout=1), clock=clock
    )
    caller = ServiceCaller(
        service="chain",
        breaker=breaker,
        policy=RetryPolicy(max_retries=0),
        clock=clock,
        timeout_s=None,
    )
    with pytest.raises(NetworkError):
        await caller.call("receipt", Flaky(ConnectionError("refused")))
    clock.advance(1)
    assert breaker.state is BreakerState.HALF_OPEN

    task = asyncio.create_task(caller.call("receipt", asyncio.Event().wait))
    await settle()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert await caller.call("receipt", Flaky(), 1) == (1,)  # the slot is free again
    assert (breaker.failures, breaker.successes) == (1, 1)


@pytest.mark.parametrize("suspend", [False, True])
async def test_policy_call_async_retries_after_the_inline_first_attempt(suspend: bool) -> None:
    clock, bus = ManualClock(), EventBus()
    events = retries(bus)
    fn = Flaky(ConnectionError("refused"), suspend=suspend)

    result = await RetryPolicy(initial_delay=0.5).call_async(
        fn, 1, 2, operation="train", bus=bus, clock=clock, transaction_id="tx", k="v"
    )

    assert result == (1, 2)
    assert fn.calls == [((1, 2), {"k": "v"})] * 2
    assert clock.sleeps == [0.5]
    assert [(e.attempt, e.delay, e.category) for e in events] == [(1, 0.5, "network")]


async def test_retry_async_continues_a_call_that_failed_elsewhere() -> None:
    clock = ManualClock()
    failure = ConnectionError("refused")
    fn = Flaky(ConnectionError("again"))

    result = await RetryPolicy(initial_delay=1).retry_async(
        failure, fn, start=clock.monotonic(), operation="op", clock=clock
    )

    assert result == ()
    assert clock.sleeps == [1, 2]  # the failure counts as attempt 1, fn's failure as 2
    assert len(fn.calls) == 2

    with pytest.raises(NetworkError) as info:
        await RetryPolicy(max_retries=0).retry_async(failure, fn, start=0.0, operation="op")
    assert info.value.__cause__ is failure


def test_breaker_settle_counts_like_guard() -> None:
    breaker = CircuitBreaker("ipfs", BreakerConfig(window_size=3, failure_threshold=3))
    trial = breaker.admit()
    breaker.settle(trial)
    breaker.settle(breaker.admit(), ConnectionError("refused"))
    breaker.settle(breaker.admit(), ValueError("bad input"))  # the service answered
    breaker.settle(breaker.admit(), asyncio.CancelledError())  # counts neither way
    assert (breaker.calls, breaker.successes, breaker.failures) == (4, 2, 1)
    assert breaker.failure_count == 1


async def test_timeout_network_error_names_the_operation_on_the_fast_path() -> None:
    caller = ServiceCaller(service="ipfs", policy=RetryPolicy(max_retries=0), timeout_s=0)
    with pytest.raises(TimeoutNetworkError, match="cat timed out after 0s"):
        await caller.call("cat", asyncio.Event().wait)
