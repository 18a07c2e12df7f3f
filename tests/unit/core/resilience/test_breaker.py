"""Circuit breaker transitions, trial limits, manual states, metrics and events (ManualClock)."""

from __future__ import annotations

import asyncio

import pytest

from r3mes_desktop.core.clock import ManualClock
from r3mes_desktop.core.errors import CircuitOpenError, NetworkError, ValidationError
from r3mes_desktop.core.events import BreakerStateChanged, EventBus
from r3mes_desktop.core.resilience.breaker import (
    SERVICES,
    BreakerConfig,
    BreakerRegistry,
    BreakerState,
    CircuitBreaker,
)

CONFIG = BreakerConfig(
    window_size=4, failure_threshold=3, open_timeout=10, half_open_max_calls=2, success_threshold=2
)


async def ok() -> str:
    return "ok"


async def down() -> str:
    raise ConnectionError("connection refused")


async def bad_input() -> str:
    raise ValidationError("bad proof")


def make(
    config: BreakerConfig = CONFIG,
) -> tuple[CircuitBreaker, ManualClock, list[BreakerStateChanged]]:
    clock = ManualClock()
    bus = EventBus()
    events: list[BreakerStateChanged] = []
    bus.subscribe(lambda e: events.append(e) if isinstance(e, BreakerStateChanged) else None)
    return CircuitBreaker("ipfs", config, clock=clock, bus=bus), clock, events


async def fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        with pytest.raises(ConnectionError):
            await breaker.call(down)


async def open_breaker(breaker: CircuitBreaker) -> None:
    await fail(breaker, CONFIG.failure_threshold)
    assert breaker.state is BreakerState.OPEN


async def test_opens_at_failure_threshold_within_the_window() -> None:
    breaker, _, events = make()
    await fail(breaker, 2)
    assert breaker.state is BreakerState.CLOSED
    await fail(breaker, 1)
    assert breaker.state is BreakerState.OPEN
    assert [(e.old_state, e.new_state) for e in events] == [("closed", "open")]
    assert events[0].service == "ipfs"
    assert events[0].failure_count == 3
    assert events[0].seconds_until_half_open == 10


async def test_sliding_window_forgets_old_failures() -> None:
    breaker, _, _ = make()
    await fail(breaker, 2)
    for _ in range(3):
        await breaker.call(ok)  # window of 4 now [F, S, S, S]: the first failure dropped
    await fail(breaker, 1)
    assert breaker.failure_count == 1
    assert breaker.state is BreakerState.CLOSED
    await fail(breaker, 1)
    assert breaker.state is BreakerState.CLOSED
    await fail(breaker, 1)
    assert breaker.state is BreakerState.OPEN


async def test_validation_errors_do_not_count() -> None:
    breaker, _, events = make()
    for _ in range(10):
        with pytest.raises(ValidationError):
            await breaker.call(bad_input)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.failures == 0
    assert breaker.successes == 10
    assert events == []


async def test_open_rejects_with_time_until_half_open() -> None:
    breaker, clock, _ = make()
    await open_breaker(breaker)
    clock.advance(4)
    with pytest.raises(CircuitOpenError) as info:
        await breaker.call(ok)
    assert info.value.retry_after == pytest.approx(6)
    assert info.value.service == "ipfs"
    assert breaker.rejections == 1
    assert breaker.snapshot().seconds_until_half_open == pytest.approx(6)


async def test_half_open_after_timeout_then_closes_after_success_threshold() -> None:
    breaker, clock, events = make()
    await open_breaker(breaker)
    clock.advance(10)
    assert breaker.state is BreakerState.HALF_OPEN
    await breaker.call(ok)
    assert breaker.state is BreakerState.HALF_OPEN
    await breaker.call(ok)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.failure_count == 0
    assert [e.new_state for e in events] == ["open", "half_open", "closed"]
    assert events[1].ts == clock.time()


async def test_half_open_failure_reopens_with_a_fresh_timeout() -> None:
    breaker, clock, events = make()
    await open_breaker(breaker)
    clock.advance(10)
    await fail(breaker, 1)
    assert breaker.state is BreakerState.OPEN
    assert breaker.seconds_until_half_open() == 10
    assert [e.new_state for e in events] == ["open", "half_open", "open"]


async def test_half_open_limits_concurrent_trial_calls() -> None:
    breaker, clock, _ = make()
    await open_breaker(breaker)
    clock.advance(10)
    release = asyncio.Event()

    async def slow() -> str:
        await release.wait()
        return "ok"

    trials = [asyncio.create_task(breaker.call(slow)) for _ in range(2)]
    await asyncio.sleep(0)
    with pytest.raises(CircuitOpenError):
        await breaker.call(ok)
    assert breaker.rejections == 1
    release.set()
    assert await asyncio.gather(*trials) == ["ok", "ok"]
    assert breaker.state is BreakerState.CLOSED


async def test_cancelled_trial_frees_its_slot_without_counting() -> None:
    breaker, clock, _ = make(BreakerConfig(window_size=2, failure_threshold=1, open_timeout=1))
    await fail(breaker, 1)
    clock.advance(1)
    hang = asyncio.create_task(breaker.call(asyncio.Event().wait))
    await asyncio.sleep(0)
    with pytest.raises(CircuitOpenError):
        await breaker.call(ok)
    hang.cancel()
    with pytest.raises(asyncio.CancelledError):
        await hang
    assert breaker.state is BreakerState.HALF_OPEN
    assert await breaker.call(ok) == "ok"


async def test_forced_open_rejects_until_reset() -> None:
    breaker, clock, events = make()
    breaker.force_open()
    clock.advance(1000)
    with pytest.raises(CircuitOpenError) as info:
        await breaker.call(ok)
    assert info.value.retry_after is None
    assert breaker.state is BreakerState.FORCED_OPEN
    breaker.reset()
    assert await breaker.call(ok) == "ok"
    assert [e.new_state for e in events] == ["forced_open", "closed"]


async def test_disabled_admits_everything_and_records_nothing() -> None:
    breaker, _, _ = make()
    breaker.disable()
    await fail(breaker, 20)
    assert breaker.state is BreakerState.DISABLED
    assert breaker.failures == 0
    assert breaker.calls == 20
    breaker.reset()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.failure_count == 0


async def test_reset_closes_an_open_breaker() -> None:
    breaker, _, _ = make()
    await open_breaker(breaker)
    breaker.reset()
    assert breaker.state is BreakerState.CLOSED
    assert await breaker.call(ok) == "ok"


async def test_timeouts_and_network_errors_count() -> None:
    breaker, _, _ = make()

    async def slow() -> None:
        raise TimeoutError

    for _ in range(2):
        with pytest.raises(TimeoutError):
            await breaker.call(slow)
    with pytest.raises(NetworkError):
        async with breaker.guard():
            raise NetworkError("503")
    assert breaker.state is BreakerState.OPEN


async def test_snapshot_metrics() -> None:
    breaker, clock, _ = make()
    await breaker.call(ok)
    await open_breaker(breaker)
    with pytest.raises(CircuitOpenError):
        await breaker.call(ok)
    clock.advance(2.5)
    snap = breaker.snapshot()
    assert snap.to_dict() == {
        "name": "ipfs",
        "state": "open",
        "calls": 4,
        "successes": 1,
        "failures": 3,
        "rejections": 1,
        "failure_count": 3,
        "window_size": 4,
        "seconds_until_half_open": 7.5,
        "last_change_ts": clock.time() - 2.5,
    }


@pytest.mark.parametrize(
    "kwargs",
    [
        {"window_size": 0},
        {"failure_threshold": 0},
        {"failure_threshold": 11},
        {"open_timeout": -1},
        {"half_open_max_calls": 0},
        {"success_threshold": 0},
    ],
)
def test_invalid_config_names_the_field(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        BreakerConfig(**kwargs)  # type: ignore[arg-type]


async def test_registry_one_breaker_per_service_from_settings() -> None:
    class S:
        breaker_window_size = 6
        breaker_failure_threshold = 2
        breaker_open_timeout = 5.0
        breaker_half_open_max_calls = 1
        breaker_success_threshold = 1

    clock = ManualClock()
    registry = BreakerRegistry.from_settings(S(), clock=clock)
    assert registry.names() == list(SERVICES)
    chain = registry.get("chain")
    assert registry["chain"] is chain
    assert chain.config.failure_threshold == 2
    await fail(chain, 2)
    snapshot = registry.snapshot()
    assert snapshot["chain"].state == "open"
    assert snapshot["ipfs"].state == "closed"
    registry.reset_all()
    assert registry.get("chain").state is BreakerState.CLOSED


def test_registry_with_per_service_configs() -> None:
    registry = BreakerRegistry({"chain": BreakerConfig(window_size=3, failure_threshold=3)})
    assert registry.get("chain").config.window_size == 3
    assert registry.get("ipfs").config == BreakerConfig()
    assert registry.get("extra").name == "extra"
