"""What the API needs from the coordinator: a narrow read/maintain view.

The API is built against this protocol, not the coordinator class, so it is testable with a
small fake and keeps working if the coordinator grows. Return values may be plain mappings
or records with `to_dict()`; `plain()` turns either into JSON-ready data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Protocol


class CoordinatorView(Protocol):
    async def statistics(self) -> Any:
        """Totals and rates; `by_state` {state: count} and `error_breakdown` feed /metrics."""
        ...

    async def status(self, transaction_id: str) -> Any:
        """The transaction's status, or None when the id is unknown."""
        ...

    async def cleanup_stale(self, *, older_than_s: float | None = None) -> Any:
        """Fail or compensate transactions stuck longer than the threshold (a report)."""
        ...

    async def error_analysis(self) -> Any:
        """Errors by category, step and service, recent failures."""
        ...


def plain(value: Any) -> Any:
    """JSON-ready form of a record, dataclass, mapping or list of them."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return plain(to_dict())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(v) for v in value]
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return str(value)
