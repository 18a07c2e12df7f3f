"""ServiceCaller composition, timeouts, executor calls, Bulkhead and FallbackEndpoints."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from r3mes_desktop.core.clock import ManualClock
from r3mes_desktop.core.errors import (
    AuthenticationError,
    CircuitOpenError,
    NetworkError,
    TimeoutNetworkError,
    ValidationError,
)
from r3mes_desktop.core.events import EndpointSwitched, Event, EventBus, RetryScheduled
from r3mes_desktop.core.resilience import (
    Bulkhead,
    FallbackEndpoints,
    ServiceCaller,
    call_sync_in_executor,
    clock_timeout,
)
from r3mes_desktop.core.resilience.breaker import BreakerConfig, BreakerState, CircuitBreaker
from r3mes_desktop.core.resilience.retry import RetryPolicy
from tests.helpers.clocks import SteppedClock, settle


def recorder(bus: EventBus) -> list[Event]:
    events: list[Event] = []
    bus.subscribe(events.append)
    return events


async def hang() -> None:
    await asyncio.Event().wait()


async def test_timeout_is_a_network_timeout_counted_by_the_breaker() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(
        "chain", BreakerConfig(window_size=2, failure_threshold=2), clock=clock
    )
    caller = ServiceCaller(
        service="chain",
        breaker=breaker,
        policy=RetryPolicy(max_retries=1),
        timeout_s=0,
        clock=clock,
    )
    with pytest.raises(TimeoutNetworkError) as info:
        await caller.call("get_round", hang)
    assert info.value.service == "chain"
    assert "get_round timed out" in info.value.message
    assert isinstance(info.value.__cause__, TimeoutError)
    assert breaker.failures == 2
    assert breaker.state is BreakerState.OPEN


async def test_timeout_on_an_injected_clock() -> None:
    clock = SteppedClock()
    caller = ServiceCaller(
        service="ipfs",
        policy=RetryPolicy(max_retries=0),
        timeout_s=30,
        clock=clock,
        timer=clock_timeout(clock),
    )
    task = asyncio.create_task(caller.call("add", hang))
    await settle()
    await clock.advance(29)
    assert not task.done()
    await clock.advance(1)
    with pytest.raises(TimeoutNetworkError, match="after 30s"):
        await task


async def test_clock_timeout_does_not_fire_for_fast_calls_or_swallow_cancel() -> None:
    clock = SteppedClock()
    caller = ServiceCaller(service="ipfs", timeout_s=5, clock=clock, timer=clock_timeout(clock))

    async def quick() -> int:
        await asyncio.sleep(0)
        return 7

    assert await caller.call("quick", quick) == 7
    assert clock.pending == 0
    task = asyncio.create_task(caller.call("add", hang))
    await settle()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_composition_retry_outside_breaker_waits_for_half_open() -> None:
    clock = ManualClock()
    bus = EventBus()
    events = recorder(bus)
    breaker = CircuitBreaker(
        "ipfs",
        BreakerConfig(window_size=2, failure_threshold=2, open_timeout=10, success_threshold=1),
        clock=clock,
        bus=bus,
    )
    calls = 0

    async def flaky(data: bytes, *, pin: bool) -> str:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise ConnectionError("connection refused")
        return f"cid-{len(data)}-{pin}"

    caller = ServiceCaller(
        service="ipfs", breaker=breaker, policy=RetryPolicy(max_retries=5), bus=bus, clock=clock
    )
    result = await caller.call("add", flaky, b"abc", pin=True, transaction_id="tx9")
    assert result == "cid-3-True"
    # attempt 1 fails (wait 1), attempt 2 fails and opens the breaker at t=1 (wait 2),
    # attempt 3 is rejected with retry_after = 10 - 2 = 8 > policy's 4, attempt 4 is the trial.
    assert clock.sleeps == [1, 2, 8]
    assert calls == 3
    assert breaker.state is BreakerState.CLOSED
    retries = [e for e in events if isinstance(e, RetryScheduled)]
    assert [e.category for e in retries] == ["network"] * 3
    assert all(e.transaction_id == "tx9" and e.service == "ipfs" for e in retries)
    assert "circuit open" in retries[2].message


async def test_non_retryable_error_passes_once_and_does_not_trip() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(
        "chain", BreakerConfig(window_size=1, failure_threshold=1), clock=clock
    )
    caller = ServiceCaller(service="chain", breaker=breaker, clock=clock)
    calls = 0

    async def revert() -> None:
        nonlocal calls
        calls += 1
        raise PermissionError("insufficient funds")

    with pytest.raises(AuthenticationError) as info:
        await caller.call("submit", revert)
    assert calls == 1
    assert info.value.service == "chain"
    assert breaker.state is BreakerState.CLOSED


async def test_forced_open_breaker_gives_up_after_the_policy() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker("task_api", clock=clock)
    breaker.force_open()
    caller = ServiceCaller(
        service="task_api", breaker=breaker, policy=RetryPolicy(max_retries=2), clock=clock
    )
    with pytest.raises(CircuitOpenError):
        await caller.call("complete", asyncio.sleep, 0)
    assert breaker.rejections == 3
    assert clock.sleeps == [1, 2]


async def test_deadline_caps_the_per_attempt_timeout() -> None:
    clock = SteppedClock()
    caller = ServiceCaller(
        service="chain",
        policy=RetryPolicy(max_retries=5, deadline=12),
        timeout_s=10,
        clock=clock,
        timer=clock_timeout(clock),
    )
    task = asyncio.create_task(caller.call("wait_receipt", hang))
    await settle()
    await clock.advance(10)  # attempt 1 times out at 10 s; the 1 s wait ends at 11
    await clock.advance(1)  # attempt 2 starts with 12 - 11 = 1 s left
    await clock.advance(1)
    assert task.done()
    with pytest.raises(TimeoutNetworkError, match="after 1s"):
        await task


async def test_call_blocking_runs_in_an_executor_thread() -> None:
    caller = ServiceCaller(service="chain", clock=ManualClock())
    loop_thread = threading.get_ident()

    def blocking(x: int, *, y: int) -> tuple[int, bool]:
        return x + y, threading.get_ident() != loop_thread

    with ThreadPoolExecutor(1) as pool:
        assert await caller.call_blocking("rpc", blocking, 1, y=2, executor=pool) == (3, True)
    assert await call_sync_in_executor(blocking, 2, y=2) == (4, True)


def test_with_options_copies() -> None:
    caller = ServiceCaller(service="ipfs", timeout_s=30)
    longer = caller.with_options(timeout_s=600)
    assert (caller.timeout_s, longer.timeout_s, longer.service) == (30, 600, "ipfs")


# -- bulkhead ----------------------------------------------------------------------------------


async def test_bulkhead_limits_and_queues_fifo() -> None:
    bulkhead = Bulkhead(2)
    order: list[int] = []
    gates = [asyncio.Event() for _ in range(4)]

    async def work(i: int) -> None:
        async with bulkhead.slot():
            order.append(i)
            await gates[i].wait()

    tasks = [asyncio.create_task(work(i)) for i in range(4)]
    await settle()
    assert order == [0, 1]
    assert bulkhead.snapshot() == {"limit": 2, "in_use": 2, "waiting": 2}
    assert bulkhead.full and not bulkhead.try_acquire()
    gates[1].set()
    await settle()
    assert order == [0, 1, 2]
    for gate in gates:
        gate.set()
    await asyncio.gather(*tasks)
    assert bulkhead.snapshot() == {"limit": 2, "in_use": 0, "waiting": 0}


async def test_bulkhead_limit_changes_live() -> None:
    bulkhead = Bulkhead(1)
    await bulkhead.acquire()
    waiters = [asyncio.create_task(bulkhead.acquire()) for _ in range(3)]
    await settle()
    assert bulkhead.waiting == 3
    bulkhead.set_limit(3)
    await settle()
    assert bulkhead.in_use == 3 and bulkhead.waiting == 1
    bulkhead.set_limit(1)  # lowering never interrupts: new entries wait for 2 releases
    bulkhead.release()
    bulkhead.release()
    await settle()
    assert not waiters[2].done()
    bulkhead.release()
    await settle()
    assert waiters[2].done() and bulkhead.in_use == 1
    with pytest.raises(ValueError, match="accepted >= 1"):
        bulkhead.set_limit(0)


async def test_bulkhead_cancelled_waiter_leaves_the_queue() -> None:
    bulkhead = Bulkhead(1)
    await bulkhead.acquire()
    waiter = asyncio.create_task(bulkhead.acquire())
    await settle()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert bulkhead.waiting == 0
    bulkhead.release()
    assert bulkhead.in_use == 0
    with pytest.raises(RuntimeError):
        bulkhead.release()


# -- fallback ----------------------------------------------------------------------------------


async def test_fallback_moves_on_network_errors_and_remembers() -> None:
    bus = EventBus()
    events = recorder(bus)
    tried: list[str] = []
    healthy = {"http://b"}

    async def rpc(url: str) -> str:
        tried.append(url)
        if url not in healthy:
            raise ConnectionError("connection refused")
        return url

    endpoints = FallbackEndpoints(["http://a", "http://b", "http://c"], service="chain", bus=bus)
    assert await endpoints.call(rpc) == "http://b"
    assert endpoints.current == "http://b" and endpoints.current_index == 1
    assert await endpoints.call(rpc) == "http://b"
    assert tried == ["http://a", "http://b", "http://b"]
    switched = [e for e in events if isinstance(e, EndpointSwitched)]
    assert [(e.from_index, e.to_index, e.category) for e in switched] == [(0, 1, "network")]
    healthy = {"http://a"}
    assert await endpoints.call(rpc) == "http://a"  # wraps around: b, c, a
    assert tried[-3:] == ["http://b", "http://c", "http://a"]


async def test_fallback_raises_other_categories_at_once() -> None:
    calls = 0

    async def revert(url: str) -> None:
        nonlocal calls
        calls += 1
        raise ValueError("execution reverted: bad proof")

    endpoints = FallbackEndpoints(["a", "b"], service="chain")
    with pytest.raises(ValidationError):
        await endpoints.call(revert)
    assert calls == 1 and endpoints.current_index == 0


async def test_fallback_all_failed_is_a_network_error_with_the_last_cause() -> None:
    async def down(url: str) -> None:
        raise NetworkError(f"503 from {url}", retry_after=5)

    endpoints = FallbackEndpoints(["a", "b"], service="chain")
    with pytest.raises(NetworkError, match="all 2 endpoints failed") as info:
        await endpoints.call(down)
    assert info.value.retry_after == 5
    assert isinstance(info.value.__cause__, NetworkError)


def test_fallback_sync_and_validation() -> None:
    def rpc(url: str) -> str:
        if url == "a":
            raise TimeoutError
        return url

    endpoints = FallbackEndpoints(["a", "b"])
    assert endpoints.call_sync(rpc) == "b"
    assert endpoints.current == "b"
    with pytest.raises(ValueError):
        FallbackEndpoints([])


async def test_fallback_inside_service_caller() -> None:
    clock = ManualClock()
    caller = ServiceCaller(service="chain", clock=clock)
    endpoints = FallbackEndpoints(["a", "b"], service="chain")

    async def rpc(url: str) -> str:
        if url == "a":
            raise ConnectionError
        return url

    assert await caller.call("block_number", endpoints.call, rpc) == "b"
    assert clock.sleeps == []
