"""`FallbackEndpoints`: several URLs for one service, tried in order inside one attempt."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from r3mes_desktop.core.errors import ErrorCategory, NetworkError, R3mesError, to_r3mes_error
from r3mes_desktop.core.events import EndpointSwitched, EventBus

T = TypeVar("T")
E = TypeVar("E")


class FallbackEndpoints(Generic[E]):
    """Ordered endpoints (RPC URLs, gateways): on a network failure, try the next one.

    The endpoint that last answered is remembered and tried first next time. Any other
    category (a revert, bad input) is the service's answer and is raised at once. When all
    fail, a NetworkError naming the count is raised with the last failure as its cause.
    """

    def __init__(
        self, endpoints: Sequence[E], *, service: str | None = None, bus: EventBus | None = None
    ) -> None:
        if not endpoints:
            raise ValueError("FallbackEndpoints needs at least one endpoint")
        self.endpoints: tuple[E, ...] = tuple(endpoints)
        self.service = service
        self._bus = bus
        self._index = 0

    @property
    def current(self) -> E:
        return self.endpoints[self._index]

    @property
    def current_index(self) -> int:
        return self._index

    def _order(self) -> list[int]:
        n = len(self.endpoints)
        return [(self._index + k) % n for k in range(n)]

    def _succeeded(self, index: int, category: str) -> None:
        if index != self._index:
            old, self._index = self._index, index
            if self._bus is not None:
                self._bus.publish(
                    EndpointSwitched(
                        service=self.service,
                        from_index=old,
                        to_index=index,
                        endpoint_count=len(self.endpoints),
                        category=category,
                    )
                )

    def _failed(self, exc: Exception) -> R3mesError:
        error = to_r3mes_error(exc, service=self.service)
        if error.category is not ErrorCategory.NETWORK:
            if error is exc:
                raise error
            raise error from exc
        return error

    def _all_failed(self, last: R3mesError | None) -> NetworkError:
        message = last.message if last is not None else "no endpoint answered"
        return NetworkError(
            f"all {len(self.endpoints)} endpoints failed; last: {message}",
            service=self.service,
            retry_after=last.retry_after if last is not None else None,
        )

    async def call(self, fn: Callable[[E], Awaitable[T]]) -> T:
        last: R3mesError | None = None
        for index in self._order():
            try:
                result = await fn(self.endpoints[index])
            except Exception as exc:
                last = self._failed(exc)
                continue
            self._succeeded(index, str(last.category) if last else "")
            return result
        raise self._all_failed(last) from last

    def call_sync(self, fn: Callable[[E], T]) -> T:
        """Blocking twin of `call`, for clients run in an executor."""
        last: R3mesError | None = None
        for index in self._order():
            try:
                result = fn(self.endpoints[index])
            except Exception as exc:
                last = self._failed(exc)
                continue
            self._succeeded(index, str(last.category) if last else "")
            return result
        raise self._all_failed(last) from last
