"""Structured logging: JSON lines, rotating, with transaction context and secrets scrubbed.

Why JSON lines: rig owners grep and ship logs to tools (jq, Loki, Elastic) that want one
object per line. Why contextvars: the coordinator runs several transactions on one event
loop; a `log_context(transaction_id=...)` block tags every record its task emits, including
records from libraries, without threading ids through every call.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import logging.handlers
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from r3mes_desktop.config.paths import paths
from r3mes_desktop.core.logcontext import CONTEXT_FIELDS, current_context, log_context
from r3mes_desktop.redact import redact

__all__ = [
    "CONTEXT_FIELDS",
    "ContextFilter",
    "JsonFormatter",
    "RedactingFilter",
    "current_context",
    "log_context",
    "log_dir",
    "log_files",
    "setup_logging",
    "teardown_logging",
]

LOG_FILE = "r3mes.log"
_OURS = "_r3mes_handler"
_STD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def log_dir() -> Path:
    """The platform log dir (see `config.paths`: R3MES_LOG_DIR, then R3MES_DATA_DIR/logs)."""
    return paths().log_dir


class ContextFilter(logging.Filter):
    """Copies the current log context onto the record (as attributes, not into the text)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in current_context().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class RedactingFilter(logging.Filter):
    """Scrubs message, args, exception and stack text before any handler formats them.

    The record is rewritten in place (msg pre-rendered, args dropped), so every handler
    after this one, ours or not, sees only the scrubbed text.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_r3mes_redacted", False):
            return True
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not lose the record
            message = f"{record.msg!r} % {record.args!r}"
        record.msg = redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        record._r3mes_redacted = True
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, context, extras, exc."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, tz=dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key in _STD_ATTRS or key.startswith("_"):
                continue
            entry[key] = value if _jsonable(value) else repr(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        # Extras may hold anything; the final pass scrubs the serialized line too.
        return redact(json.dumps(entry, default=repr, ensure_ascii=False))


class ConsoleFormatter(logging.Formatter):
    """Human one-liners for stderr, with the context appended in brackets."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        ctx = " ".join(f"{k}={getattr(record, k)}" for k in CONTEXT_FIELDS if hasattr(record, k))
        return redact(f"{text} [{ctx}]" if ctx else text)


def _jsonable(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool | list | dict)


def setup_logging(
    *,
    level: int | str = logging.INFO,
    directory: Path | None = None,
    console: bool = True,
    console_level: int | str | None = None,
    max_bytes: int = 5 * 1024 * 1024,
    backup_count: int = 5,
) -> Path:
    """Install the rotating JSON file handler (and a stderr one); returns the log file path.

    Idempotent: calling it again replaces the handlers it installed before, so the GUI,
    the CLI and tests can all call it.
    """
    if max_bytes < 1024:
        raise ValueError(f"max_bytes must be >= 1024, got {max_bytes}")
    if backup_count < 1:
        raise ValueError(f"backup_count must be >= 1, got {backup_count}")
    directory = directory or log_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOG_FILE
    root = logging.getLogger()
    teardown_logging()

    file_handler = logging.handlers.RotatingFileHandler(
        path, maxBytes=max_bytes, backupCount=backup_count, encoding="utf-8"
    )
    file_handler.setFormatter(JsonFormatter())
    handlers: list[logging.Handler] = [file_handler]
    if console:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(ConsoleFormatter())
        stream.setLevel(console_level if console_level is not None else level)
        handlers.append(stream)
    for handler in handlers:
        handler.addFilter(ContextFilter())
        handler.addFilter(RedactingFilter())
        setattr(handler, _OURS, True)
        root.addHandler(handler)
    root.setLevel(level)
    with contextlib.suppress(OSError):
        os.chmod(path, 0o600)  # logs hold addresses and CIDs: the user's business only
    return path


def teardown_logging() -> None:
    """Remove and close the handlers `setup_logging` installed."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _OURS, False):
            root.removeHandler(handler)
            handler.close()


def log_files(directory: Path | None = None) -> list[Path]:
    """The current log and its rotated siblings, newest first."""
    directory = directory or log_dir()
    if not directory.is_dir():
        return []
    files = [p for p in directory.glob(LOG_FILE + "*") if p.is_file()]
    return sorted(files, key=lambda p: (p.name != LOG_FILE, p.name))
