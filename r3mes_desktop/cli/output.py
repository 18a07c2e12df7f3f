"""Human output by default, JSON for scripts, and a one-line progress display on stderr.

stdout carries results only (one JSON document with --json), so `r3mes-miner stats --json
| jq` always works; progress and warnings go to stderr.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from r3mes_desktop.api.protocol import plain
from r3mes_desktop.core.events import (
    Event,
    ModelVersionPublished,
    Notice,
    RetryScheduled,
    StepProgress,
    TransactionStateChanged,
    VerdictRecorded,
)
from r3mes_desktop.support.alerts import retry_text, short_id
from r3mes_desktop.support.redact import redact


class Output:
    def __init__(self, *, as_json: bool, stream: TextIO | None = None) -> None:
        self.as_json = as_json
        self.stream = stream or sys.stdout

    def emit(self, data: Any, human: Callable[[Any], str] | None = None) -> None:
        """Print `data` as JSON, or as `human(data)` (default: aligned key/value lines)."""
        value = plain(data)
        if self.as_json:
            text = json.dumps(value, indent=2, sort_keys=True, default=str)
        else:
            text = human(value) if human is not None else format_mapping(value)
        self.stream.write(redact(text) + "\n")
        self.stream.flush()


def format_mapping(value: Any, indent: int = 0) -> str:
    if not isinstance(value, Mapping):
        return " " * indent + str(value)
    if not value:
        return " " * indent + "(none)"
    width = max(len(str(k)) for k in value)
    lines = []
    for key, item in value.items():
        if isinstance(item, Mapping):
            lines.append(f"{' ' * indent}{key}:")
            lines.append(format_mapping(item, indent + 2))
        elif isinstance(item, float):
            lines.append(f"{' ' * indent}{str(key).ljust(width)}  {item:.4g}")
        else:
            lines.append(f"{' ' * indent}{str(key).ljust(width)}  {item}")
    return "\n".join(lines)


def format_table(rows: list[Mapping[str, Any]], columns: list[str]) -> str:
    if not rows:
        return "(none)"
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    head = "  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))
    body = ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join([head, *body])


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


class Progress:
    """Shows the current transaction's step on one stderr line, and each scheduled retry
    ("IPFS unreachable (connection refused) — retry 2/3 in 4 s"), each verdict read from
    chain ("round 3: accepted, +100 credits"), each new network model version ("network
    model version 4: held-out loss 2.6807 (round 73, 1 update)") and where the miner is
    ("connected to …, 2 open rounds for you", "waiting for rounds") on a line of its own.

    On a terminal the line is rewritten in place; otherwise (journald, a pipe) a line is
    printed only when the step changes or every `plain_interval_s`, so logs are not flooded.
    """

    def __init__(
        self,
        *,
        stream: TextIO | None = None,
        tty: bool | None = None,
        plain_interval_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.plain_interval_s = plain_interval_s
        self._clock = clock
        self._last_key: tuple[str, str, str] | None = None
        self._last_plain = float("-inf")
        self._width = 0

    def on_event(self, event: Event) -> None:
        if isinstance(event, StepProgress):
            detail = event.detail
            extras = []
            for key, unit in (("loss", ""), ("tokens_per_s", " tok/s"), ("hash_rate", " H/s")):
                value = detail.get(key)
                if isinstance(value, int | float):
                    extras.append(f"{key.split('_')[0]} {value:,.4g}{unit}")
            line = (
                f"{short_id(event.transaction_id)} {event.step:<17} {event.fraction * 100:5.1f}%  "
                + "  ".join(extras)
            )
            self._show(("progress", event.transaction_id, event.step), line.rstrip())
        elif isinstance(event, TransactionStateChanged):
            line = f"{short_id(event.transaction_id)} round {event.round_id}: {event.new_state}"
            if event.error_message:
                line += f" ({event.error_category}: {event.error_message})"
            self._show(("state", event.transaction_id, event.new_state), line, force=True)
        elif isinstance(event, RetryScheduled):
            # Retries are logged at INFO, below the console's level: without this line an
            # outage looks like a hang.
            text = retry_text(
                service=event.service,
                operation=event.operation,
                category=event.category,
                message=event.message,
                attempt=event.attempt,
                max_attempts=event.max_attempts,
                delay=event.delay,
            )
            if event.transaction_id:
                line = f"{short_id(event.transaction_id)} {text}"
            else:
                line = text[:1].upper() + text[1:]
            dedup = ("retry", event.service or event.operation, str(event.attempt))
            self._show(dedup, line, force=True)
        elif isinstance(event, Notice) and event.source == "network":
            # Logged at INFO, below the console's level, and said only when it changes. (A
            # skipped round is a warning: the console shows its log line already.)
            self._show(("notice", event.source, event.message), event.message, force=True)
        elif isinstance(event, VerdictRecorded):
            line = f"{short_id(event.transaction_id)} round {event.round_id}: {event.verdict}"
            if event.verdict == "accepted":
                line += f", +{event.credits} credits"
            else:
                line += f" ({event.reason_text}), no credits"
            self._show(("verdict", event.transaction_id, event.verdict), line, force=True)
        elif isinstance(event, ModelVersionPublished) and event.version_id == event.current_version:
            # Older versions read to fill in a long history are not news: no line each.
            updates = f"{event.updates} update{'' if event.updates == 1 else 's'}"
            line = (
                f"network model version {event.version_id}: held-out loss "
                f"{event.eval_loss:.4f} (round {event.round_id}, {updates})"
            )
            self._show(("model", str(event.version_id), ""), line, force=True)

    def _show(self, key: tuple[str, str, str], line: str, *, force: bool = False) -> None:
        line = redact(line)
        if self.tty:
            pad = max(0, self._width - len(line))
            self.stream.write("\r" + line + " " * pad)
            if force:
                self.stream.write("\n")
                self._width = 0
            else:
                self._width = len(line)
            self.stream.flush()
            return
        now = self._clock()
        if force or key != self._last_key or now - self._last_plain >= self.plain_interval_s:
            self.stream.write(line + "\n")
            self.stream.flush()
            self._last_plain = now
        self._last_key = key

    def finish(self) -> None:
        if self.tty and self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0
