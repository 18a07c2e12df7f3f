"""What the core returns, turned into what the window says.

The coordinator, breakers and miner return small records (dataclasses or dicts). Reading
them through these helpers keeps every "which field is it called" decision in one file and
every sentence the user reads written in plain language.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from r3mes_desktop.notices import plain_reason

SERVICE_LABELS = {"chain": "Chain RPC", "ipfs": "IPFS", "task_api": "Task API"}
SERVICE_PHRASE = {"chain": "the chain RPC", "ipfs": "IPFS", "task_api": "the task API"}

BREAKER_COLOURS = {
    "CLOSED": "#2e7d32",
    "HALF_OPEN": "#b26a00",
    "OPEN": "#c62828",
    "FORCED_OPEN": "#6a1b9a",
    "DISABLED": "#757575",
}
BREAKER_TEXT = {
    "CLOSED": "Closed — calls flow",
    "HALF_OPEN": "Half-open — trying again",
    "OPEN": "Open — calls paused",
    "FORCED_OPEN": "Forced open — paused by you",
    "DISABLED": "Disabled — not protecting",
}


def field_of(obj: Any, *names: str, default: Any = None) -> Any:
    """The first of `names` present on a dict or object (None values are skipped)."""
    for name in names:
        value = obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)
        if value is not None:
            return value
    return default


def state_name(value: Any) -> str:
    """Enum or string state → upper-case name ("BreakerState.OPEN" → "OPEN")."""
    name = getattr(value, "name", None) or str(value)
    return name.rsplit(".", 1)[-1].upper()


def format_seconds(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def describe_cleanup(report: Any) -> str:
    """One sentence for a CleanupReport: how many, and what was done to them."""
    if report is None:
        return "Stale cleanup: nothing to do."
    count = field_of(report, "count", "cleaned", "total")
    items = field_of(report, "transactions", "items", "cleaned_ids", default=None)
    if count is None and items is not None:
        count = len(items)
    count = int(count or 0)
    if count == 0:
        return "Stale cleanup: no stale transactions found — nothing to do."
    actions = field_of(report, "actions", "by_outcome", "outcomes", default=None)
    detail = ""
    if isinstance(actions, Mapping) and actions:
        detail = ": " + ", ".join(f"{n} {k.lower().replace('_', ' ')}" for k, n in actions.items())
    elif isinstance(actions, list | tuple) and actions:
        detail = ": " + "; ".join(str(a) for a in actions[:5])
    unpinned = field_of(report, "unpinned", "unpinned_cids", default=None)
    if unpinned:
        n = unpinned if isinstance(unpinned, int) else len(unpinned)
        detail += f" (unpinned {n} upload{'s' if n != 1 else ''})"
    noun = "transaction" if count == 1 else "transactions"
    return f"Cleaned up {count} stale {noun}{detail}."


def describe_resumable(item: Any, *, now: float | None = None) -> str:
    """E.g. "Resume round 3 at step 40/100 (checkpoint 12 min old)"."""
    now = time.time() if now is None else now
    round_id = field_of(item, "round_id")
    step = field_of(item, "step", "checkpoint_step")
    total = field_of(item, "steps", "total_steps")
    saved = field_of(item, "saved_at", "checkpoint_at", "updated_at", "created_at")
    age = field_of(item, "age_seconds")
    if age is None and saved is not None:
        age = now - float(saved)
    where = f" at step {step}" + (f"/{total}" if total else "") if step is not None else ""
    when = f" (checkpoint {format_seconds(float(age))} old)" if age is not None else ""
    return f"Resume round {round_id}{where}{when}"


def describe_breaker_wait(snapshot: Any) -> str:
    wait = field_of(snapshot, "seconds_until_half_open")
    if wait is None:
        return ""
    return format_seconds(float(wait))


def down_message(service: str, endpoint: str | None, reason: str, retry_in: float | None) -> str:
    """E.g. "Can't reach the chain RPC at http://127.0.0.1:8545: connection refused —
    retrying in 8 s"."""
    where = f" at {endpoint}" if endpoint else ""
    text = f"Can't reach {SERVICE_PHRASE.get(service, service)}{where}: {plain_reason(reason)}"
    if retry_in is not None:
        text += f" — retrying in {max(0.0, retry_in):.0f} s"
    return text
