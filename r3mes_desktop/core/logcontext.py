"""The log context (transaction id, round, step, service) as a contextvar the core can set.

It lives in core so the coordinator, saga and service caller can tag their work without
importing anything above core; `r3mes_desktop.support.logs` copies it onto every log record.
asyncio tasks copy the context when created, so a `with log_context(transaction_id=...)`
around `ensure_future(saga.drive(...))` tags everything that transaction's task logs.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any

CONTEXT_FIELDS = ("transaction_id", "round_id", "step", "service", "operation")

_EMPTY: Mapping[str, Any] = MappingProxyType({})
_context: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "r3mes_log_context", default=_EMPTY
)


def current_context() -> Mapping[str, Any]:
    return _context.get()


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[Mapping[str, Any]]:
    """Tag every record logged inside the block (and tasks it creates) with `fields`."""
    unknown = set(fields) - set(CONTEXT_FIELDS)
    if unknown:
        raise ValueError(f"log_context: unknown field(s) {sorted(unknown)}; use {CONTEXT_FIELDS}")
    merged = MappingProxyType(
        {**_context.get(), **{k: v for k, v in fields.items() if v is not None}}
    )
    token = _context.set(merged)
    try:
        yield merged
    finally:
        _context.reset(token)
