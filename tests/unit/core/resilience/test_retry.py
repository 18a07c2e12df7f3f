"""Retry policy: exact delays, what is retried, Retry-After, "retry now", events; no real sleep."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from r3mes_desktop.core.clock import ManualClock
from r3mes_desktop.core.errors import (
    AuthenticationError,
    NetworkError,
    PermanentError,
    R3mesError,
    ResourceError,
    ValidationError,
)
from r3mes_desktop.core.events import Event, EventBus, RetryScheduled
from r3mes_desktop.core.resilience.retry import RetryGate, RetryPolicy
from tests.helpers.clocks import SteppedClock, settle


class Flaky:
    """Fails with the given exceptions in turn, then returns "ok"; counts calls."""

    def __init__(self, *failures: BaseException) -> None:
        self.failures = list(failures)
        self.calls = 0

    async def __call__(self, *args: Any, **kwargs: Any) -> str:
        self.calls += 1
        self.args = (args, kwargs)
        await asyncio.sleep(0)
        if self.failures:
            raise self.failures.pop(0)
        return "ok"

    def sync(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "ok"


def recorder(bus: EventBus) -> list[Event]:
    events: list[Event] = []
    bus.subscribe(events.append)
    return events


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (RetryPolicy(), [1, 2, 4]),
        (RetryPolicy(wait="linear", initial_delay=2), [2, 4, 6]),
        (RetryPolicy(wait="fixed", initial_delay=5), [5, 5, 5]),
        (RetryPolicy(wait="fibonacci", max_retries=7), [1, 1, 2, 3, 5, 8, 13]),
        (RetryPolicy(max_retries=8, max_delay=60), [1, 2, 4, 8, 16, 32, 60, 60]),
        (RetryPolicy(wait="linear", initial_delay=2, max_delay=5), [2, 4, 5]),
        (RetryPolicy(wait="fixed", initial_delay=5, max_delay=3), [3, 3, 3]),
        (RetryPolicy(wait="fibonacci", max_retries=7, max_delay=4), [1, 1, 2, 3, 4, 4, 4]),
        (RetryPolicy(backoff_factor=3, initial_delay=0.5), [0.5, 1.5, 4.5]),
    ],
)
async def test_exact_delay_sequences(policy: RetryPolicy, expected: list[float]) -> None:
    assert policy.delays() == expected
    clock = ManualClock()
    fn = Flaky(*[ConnectionError("refused") for _ in expected])
    assert await policy.call_async(fn, operation="op", clock=clock) == "ok"
    assert clock.sleeps == expected
    assert fn.calls == len(expected) + 1


async def test_async_function_really_retried_then_gives_up_classified() -> None:
    clock = ManualClock()
    original = ConnectionError("connection refused")
    fn = Flaky(*[original] * 10)
    with pytest.raises(NetworkError) as info:
        await RetryPolicy(max_retries=3).call_async(fn, operation="upload", clock=clock)
    assert fn.calls == 4
    assert info.value.__cause__ is original
    assert clock.sleeps == [1, 2, 4]


async def test_arguments_are_passed_through() -> None:
    fn = Flaky()
    await RetryPolicy().call_async(fn, 1, 2, operation="op", clock=ManualClock(), key="v")
    assert fn.args == ((1, 2), {"key": "v"})


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("bad input"),
        PermissionError("denied"),
        AuthenticationError("bad signature"),
        ValidationError("bad proof"),
        PermanentError("round closed"),
        RuntimeError("something unknown"),
    ],
)
async def test_non_retryable_categories_fail_at_once(exc: Exception) -> None:
    clock = ManualClock()
    bus = EventBus()
    events = recorder(bus)
    fn = Flaky(exc)
    with pytest.raises(R3mesError) as info:
        await RetryPolicy().call_async(fn, operation="op", clock=clock, bus=bus)
    assert fn.calls == 1
    assert clock.sleeps == []
    assert events == []
    assert not info.value.retryable
    if not isinstance(exc, R3mesError):
        assert info.value.__cause__ is exc
    else:
        assert info.value is exc
        assert info.value.__cause__ is None


async def test_resource_errors_are_retried() -> None:
    clock = ManualClock()
    fn = Flaky(MemoryError(), ResourceError("gpu busy"))
    assert await RetryPolicy().call_async(fn, operation="train", clock=clock) == "ok"
    assert fn.calls == 3


async def test_cancellation_is_not_retried() -> None:
    fn = Flaky(asyncio.CancelledError())
    with pytest.raises(asyncio.CancelledError):
        await RetryPolicy().call_async(fn, operation="op", clock=ManualClock())
    assert fn.calls == 1


async def test_jitter_stays_within_bounds() -> None:
    policy = RetryPolicy(max_retries=8, jitter=True, max_delay=20, rng=random.Random(7))
    nominal = policy.delays()
    for _ in range(50):
        clock = ManualClock()
        await policy.call_async(Flaky(*[TimeoutError()] * 8), operation="op", clock=clock)
        assert len(clock.sleeps) == 8
        for delay, cap in zip(clock.sleeps, nominal, strict=True):
            assert 0.0 <= delay <= cap <= 20
    # full jitter really spreads: not all equal to the nominal delays
    assert clock.sleeps != nominal


async def test_retry_after_is_honoured_even_above_max_delay() -> None:
    clock = ManualClock()
    fn = Flaky(
        NetworkError("429", retry_after=30),
        NetworkError("503"),
        NetworkError("x", retry_after=0.5),
    )
    await RetryPolicy(max_delay=10).call_async(fn, operation="op", clock=clock)
    assert clock.sleeps == [30, 2, 4]


async def test_events_published_before_each_sleep() -> None:
    clock = ManualClock()
    bus = EventBus()
    events = recorder(bus)
    fn = Flaky(ConnectionError("refused"), TimeoutError("slow"))
    await RetryPolicy().call_async(
        fn, operation="add", service="ipfs", bus=bus, clock=clock, transaction_id="tx1"
    )
    assert all(isinstance(e, RetryScheduled) for e in events)
    scheduled = [e for e in events if isinstance(e, RetryScheduled)]
    assert [(e.attempt, e.delay, e.category) for e in scheduled] == [
        (1, 1.0, "network"),
        (2, 2.0, "network"),
    ]
    assert scheduled[0].operation == "add"
    assert scheduled[0].service == "ipfs"
    assert scheduled[0].transaction_id == "tx1"
    assert "refused" in scheduled[0].message


async def test_deadline_stops_before_the_wait_that_would_cross_it() -> None:
    clock = ManualClock()
    fn = Flaky(*[ConnectionError()] * 10)
    with pytest.raises(NetworkError):
        await RetryPolicy(max_retries=10, deadline=10).call_async(fn, operation="op", clock=clock)
    # waits 1, 2, 4 reach t=7; the next (8) would end at 15 >= 10
    assert clock.sleeps == [1, 2, 4]
    assert fn.calls == 4


def test_sync_call_retries_with_injected_sleep() -> None:
    sleeps: list[float] = []
    bus = EventBus()
    events = recorder(bus)
    fn = Flaky(ConnectionError(), OSError(28, "No space left on device"))
    result = RetryPolicy(wait="fixed", initial_delay=5).call(
        fn.sync, operation="write", bus=bus, sleep=sleeps.append
    )
    assert result == "ok"
    assert sleeps == [5, 5]
    assert [e.category for e in events if isinstance(e, RetryScheduled)] == [
        "network",
        "resource",
    ]


def test_sync_call_fails_fast_and_deadline_uses_injected_monotonic() -> None:
    with pytest.raises(ValidationError):
        RetryPolicy().call(Flaky(KeyError("x")).sync, operation="op", sleep=lambda s: None)
    now = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    with pytest.raises(NetworkError):
        RetryPolicy(max_retries=9, deadline=5).call(
            Flaky(*[ConnectionError()] * 10).sync,
            operation="op",
            sleep=sleep,
            monotonic=lambda: now[0],
        )
    assert sleeps == [1, 2]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_retries": -1},
        {"initial_delay": -1},
        {"backoff_factor": 0.5},
        {"max_delay": -2},
        {"wait": "quadratic"},
        {"deadline": 0},
    ],
)
def test_invalid_policy_names_the_field(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        RetryPolicy(**kwargs)


def test_from_settings_reads_the_retry_fields() -> None:
    class S:
        max_retries = 5
        retry_initial_delay = 0.5
        retry_max_delay = 8.0
        retry_backoff_factor = 3.0
        retry_wait = "linear"
        retry_jitter = False

    policy = RetryPolicy.from_settings(S(), deadline=100)
    assert policy == RetryPolicy(
        max_retries=5, initial_delay=0.5, max_delay=8, backoff_factor=3, wait="linear", deadline=100
    )


# -- manual "retry now" ------------------------------------------------------------------------


async def test_retry_now_cuts_a_policy_wait_short() -> None:
    clock = SteppedClock()
    gate = RetryGate()
    fn = Flaky(ConnectionError())
    task = asyncio.create_task(
        RetryPolicy(initial_delay=30).call_async(fn, operation="op", clock=clock, gate=gate)
    )
    await settle()
    assert gate.waiting == 1 and fn.calls == 1
    await clock.advance(5)
    assert not task.done()
    assert gate.wake() == 1
    await settle()
    assert task.done() and task.result() == "ok"
    assert fn.calls == 2
    assert clock.monotonic() == 5


async def test_retry_now_never_shortens_a_server_requested_delay() -> None:
    clock = SteppedClock()
    gate = RetryGate()
    fn = Flaky(NetworkError("429 too many requests", retry_after=20))
    task = asyncio.create_task(
        RetryPolicy(initial_delay=1).call_async(fn, operation="op", clock=clock, gate=gate)
    )
    await settle()
    await clock.advance(3)
    gate.wake()
    await settle()
    assert not task.done(), "woken before the server's 20 s"
    await clock.advance(16)
    assert not task.done()
    await clock.advance(1)
    assert task.done() and task.result() == "ok"
    assert clock.monotonic() == 20


async def test_retry_now_with_nobody_waiting_is_not_remembered() -> None:
    gate = RetryGate()
    assert gate.wake() == 0
    clock = SteppedClock()
    waiter = asyncio.create_task(gate.wait(10, clock=clock))
    await settle()
    assert not waiter.done()
    await clock.advance(10)
    assert waiter.done()


async def test_cancelling_a_gated_wait_leaves_nothing_behind() -> None:
    clock = SteppedClock()
    gate = RetryGate()
    waiter = asyncio.create_task(gate.wait(10, clock=clock))
    await settle()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert gate.waiting == 0
    assert clock.pending == 0
