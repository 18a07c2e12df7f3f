"""A call refused because the half-open trial is still running waits for its verdict.

Three transactions once ended together 12 s after IPFS came back: the trial was about to
succeed, and every other call was refused "trial calls in progress" and gave up.
"""

from __future__ import annotations

import asyncio

import pytest

from r3mes_desktop.core.clock import ManualClock
from r3mes_desktop.core.errors import CircuitOpenError, NetworkError, TrialInProgressError
from r3mes_desktop.core.events import EventBus, RetryScheduled
from r3mes_desktop.core.resilience import ServiceCaller
from r3mes_desktop.core.resilience.breaker import BreakerConfig, BreakerState, CircuitBreaker
from r3mes_desktop.core.resilience.retry import RetryPolicy


def half_open_breaker(clock: ManualClock) -> CircuitBreaker:
    breaker = CircuitBreaker(
        "ipfs",
        BreakerConfig(window_size=1, failure_threshold=1, open_timeout=10, success_threshold=1),
        clock=clock,
    )
    breaker.settle(breaker.admit(), NetworkError("connection refused"))  # opens
    clock.advance(10)
    assert breaker.state is BreakerState.HALF_OPEN
    return breaker


async def _trial_and_others(
    trial_outcome: Exception | None,
) -> tuple[CircuitBreaker, list[object], list[RetryScheduled]]:
    clock = ManualClock()
    breaker = half_open_breaker(clock)
    bus = EventBus()
    retries: list[RetryScheduled] = []
    bus.subscribe(lambda e: retries.append(e) if isinstance(e, RetryScheduled) else None)
    caller = ServiceCaller(
        service="ipfs",
        breaker=breaker,
        policy=RetryPolicy(max_retries=0),
        bus=bus,
        clock=clock,
        timeout_s=5.0,
    )
    release = asyncio.Event()
    calls = 0

    async def trial_call() -> str:
        nonlocal calls
        calls += 1
        await release.wait()
        if trial_outcome is not None:
            raise trial_outcome
        return "trial"

    async def other_call(n: int) -> str:
        nonlocal calls
        calls += 1
        return f"other-{n}"

    trial = asyncio.ensure_future(caller.call("add", trial_call, transaction_id="t0"))
    await asyncio.sleep(0)  # the trial holds the only slot
    others = [
        asyncio.ensure_future(caller.call("add", other_call, n, transaction_id=f"t{n}"))
        for n in (1, 2, 3)
    ]
    await asyncio.sleep(0.05)
    assert not any(o.done() for o in others)  # waiting for the verdict, not failed
    release.set()
    results = await asyncio.gather(trial, *others, return_exceptions=True)
    return breaker, results, retries


async def test_calls_wait_for_a_successful_trial_and_then_go_through() -> None:
    breaker, results, retries = await _trial_and_others(None)
    assert results == ["trial", "other-1", "other-2", "other-3"]
    assert breaker.state is BreakerState.CLOSED
    assert retries == []  # no attempt was spent waiting


async def test_a_failed_trial_refuses_the_waiting_calls_as_open_with_its_wait() -> None:
    breaker, results, _ = await _trial_and_others(NetworkError("connection refused"))
    assert breaker.state is BreakerState.OPEN
    for refused in results[1:]:
        assert isinstance(refused, CircuitOpenError)
        assert not isinstance(refused, TrialInProgressError)
        assert refused.retry_after == pytest.approx(10)


async def test_the_wait_is_bounded_by_the_call_timeout() -> None:
    clock = ManualClock()
    breaker = half_open_breaker(clock)
    caller = ServiceCaller(
        service="ipfs",
        breaker=breaker,
        policy=RetryPolicy(max_retries=0),
        clock=clock,
        timeout_s=0.05,
    )
    held = breaker.admit()  # a trial that never ends
    assert held
    with pytest.raises(TrialInProgressError, match=r"no verdict within 0\.05s"):
        await caller.call("add", asyncio.sleep, 0)
