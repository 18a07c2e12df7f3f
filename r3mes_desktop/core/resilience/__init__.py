"""Resilience: the policies every service call goes through, each its own small object.

- `caller`: `ServiceCaller`, the one way to call a service (retry → breaker → timeout);
- `retry`: `RetryPolicy`, `RetryGate`; `breaker`: `CircuitBreaker` and its registry;
- `bulkhead`: how many transactions run at once; `fallback`: several endpoints per service.
"""

from r3mes_desktop.core.resilience.bulkhead import Bulkhead
from r3mes_desktop.core.resilience.caller import (
    ServiceCaller,
    TimerFactory,
    call_sync_in_executor,
    clock_timeout,
)
from r3mes_desktop.core.resilience.fallback import FallbackEndpoints

__all__ = [
    "Bulkhead",
    "FallbackEndpoints",
    "ServiceCaller",
    "TimerFactory",
    "call_sync_in_executor",
    "clock_timeout",
]
