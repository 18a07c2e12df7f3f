"""What the core returns, turned into what the window says.

The coordinator returns the core's records (`CleanupReport`, the `resumable()` items);
these helpers keep every sentence the user reads about them in one file, in plain
language.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from r3mes_desktop.support.alerts import plain_reason

if TYPE_CHECKING:
    from r3mes_desktop.core.records import CleanupReport

SERVICE_LABELS = {"chain": "Chain RPC", "ipfs": "IPFS", "task_api": "Task API"}
SERVICE_PHRASE = {"chain": "the chain RPC", "ipfs": "IPFS", "task_api": "the task API"}

# Keyed by core.breaker.BreakerState values (a StrEnum: they compare equal to these
# strings), so this module need not import the breaker, which imports asyncio.
BREAKER_COLOURS = {
    "closed": "#2e7d32",
    "half_open": "#b26a00",
    "open": "#c62828",
    "forced_open": "#6a1b9a",
    "disabled": "#757575",
}
BREAKER_TEXT = {
    "closed": "Closed — calls flow",
    "half_open": "Half-open — trying again",
    "open": "Open — calls paused",
    "forced_open": "Forced open — paused by you",
    "disabled": "Disabled — not protecting",
}


def format_seconds(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def describe_cleanup(report: CleanupReport) -> str:
    """One sentence for a CleanupReport: how many, and what was done to them."""
    if report.count == 0:
        return "Stale cleanup: no stale transactions found — nothing to do."
    detail = ""
    if report.actions:
        detail = ": " + ", ".join(
            f"{n} {state.replace('_', ' ')}" for state, n in report.actions.items()
        )
    if report.unpinned:
        n = len(report.unpinned)
        detail += f" (unpinned {n} upload{'s' if n != 1 else ''})"
    noun = "transaction" if report.count == 1 else "transactions"
    return f"Cleaned up {report.count} stale {noun}{detail}."


def describe_resumable(item: Mapping[str, Any]) -> str:
    """E.g. "Resume round 3 at step 40 (checkpoint 12 min old)", for one item of
    `Coordinator.resumable()`."""
    step = item.get("step")
    age = item.get("age_seconds")
    where = f" at step {step}" if step is not None else ""
    when = f" (checkpoint {format_seconds(float(age))} old)" if age is not None else ""
    return f"Resume round {item['round_id']}{where}{when}"


def down_message(service: str, endpoint: str | None, reason: str, retry_in: float | None) -> str:
    """E.g. "Can't reach the chain RPC at http://127.0.0.1:8545: connection refused —
    retrying in 8 s"."""
    where = f" at {endpoint}" if endpoint else ""
    text = f"Can't reach {SERVICE_PHRASE.get(service, service)}{where}: {plain_reason(reason)}"
    if retry_in is not None:
        text += f" — retrying in {max(0.0, retry_in):.0f} s"
    return text
