"""A coordinator view for API tests: real records, in memory, with the calls it received."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from r3mes_desktop.core.errors import NetworkError


@dataclass
class FakeCoordinatorView:
    """Implements `r3mes_desktop.api.protocol.CoordinatorView` from plain data."""

    stats: dict[str, Any] = field(default_factory=dict)
    statuses: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: dict[str, Any] = field(default_factory=dict)
    cleanup_calls: list[float | None] = field(default_factory=list)
    fail_with: Exception | None = None

    async def statistics(self) -> dict[str, Any]:
        if self.fail_with is not None:
            raise self.fail_with
        return dict(self.stats)

    async def status(self, transaction_id: str) -> dict[str, Any] | None:
        return self.statuses.get(transaction_id)

    async def cleanup_stale(self, *, older_than_s: float | None = None) -> dict[str, Any]:
        self.cleanup_calls.append(older_than_s)
        if self.fail_with is not None:
            raise self.fail_with
        return {"older_than_s": older_than_s or 600.0, "count": 0, "cleaned": []}

    async def error_analysis(self) -> dict[str, Any]:
        return dict(self.errors)


def unreachable() -> NetworkError:
    return NetworkError("chain RPC unreachable", service="chain")
