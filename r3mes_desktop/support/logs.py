"""Structured logging: JSON lines, rotating, with transaction context and secrets scrubbed.

Why JSON lines: rig owners grep and ship logs to tools (jq, Loki, Elastic) that want one
object per line. Why contextvars: the coordinator runs several transactions on one event
loop; a `log_context(transaction_id=...)` block tags every record its task emits, including
records from libraries, without threading ids through every call.

Why one queue: every record goes through a single `QueueHandler` at the head of the root
logger, which copies the log context and redacts the record in place, once, on the thread
that logged it. A `QueueListener` thread then formats and writes it (file, console, the
GUI's log pane: `attach_handler`), so no handler ever sees a secret in clear and the file
I/O (about 0.3 ms a record) stays off the GUI thread.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import json
import logging
import logging.handlers
import os
import queue
import sys
import threading
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from r3mes_desktop.core.logcontext import CONTEXT_FIELDS, current_context, log_context
from r3mes_desktop.support.redact import MASK, is_sensitive_key, redact, redact_obj

__all__ = [
    "CONTEXT_FIELDS",
    "ContextFilter",
    "JsonFormatter",
    "RedactingFilter",
    "attach_handler",
    "current_context",
    "detach_handler",
    "flush_logging",
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
    """The platform log dir (see `config.paths`: R3MES_LOG_DIR, then R3MES_DATA_DIR/logs).

    Imported here, not at module level: `config` loads pydantic, and the desktop app sets
    up its log queue before the first paint.
    """
    from r3mes_desktop.support.config.paths import paths

    return paths().log_dir


class ContextFilter(logging.Filter):
    """Copies the current log context onto the record (as attributes, not into the text)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in current_context().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class RedactingFilter(logging.Filter):
    """Scrubs message, args, exception and stack text and extras before any handler.

    The record is rewritten in place (msg pre-rendered, args dropped, the traceback kept as
    redacted `exc_text` and `exc_info` dropped), so every handler after this one, ours or
    not, sees only the scrubbed text.
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
        record.exc_info = None  # the exception's own text is not redacted: only exc_text is
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for key, value in list(vars(record).items()):
            if key in _STD_ATTRS or key.startswith("_") or key in CONTEXT_FIELDS:
                continue
            if is_sensitive_key(key) and value not in (None, ""):
                setattr(record, key, MASK)
            elif _jsonable(value):
                setattr(record, key, redact_obj(value))
            else:
                setattr(record, key, redact(repr(value)))
        record._r3mes_redacted = True
        return True


class _RedactingQueueHandler(logging.handlers.QueueHandler):
    """The root logger's one handler of ours: context + redaction, then the queue.

    Filters run on the logging thread (contextvars are read there); `prepare` enqueues a
    copy, so a listener-side handler changing its record cannot affect the caller's.
    """

    def __init__(self, q: queue.Queue[Any]) -> None:
        super().__init__(q)
        self.state: _QueueState | None = None
        self.addFilter(ContextFilter())
        self.addFilter(RedactingFilter())

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        record = copy.copy(record)
        record.message = record.getMessage()
        return record

    def flush(self) -> None:
        """Wait until the listener has handled every queued record, then flush its handlers."""
        if self.state is not None:
            self.state.drain()


@dataclass
class _QueueState:
    """One installation of the log queue: its listener and the handlers hung off it."""

    queue: queue.Queue[Any]
    listener: logging.handlers.QueueListener
    head: _RedactingQueueHandler
    own: list[logging.Handler] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def set_handlers(self, handlers: list[logging.Handler]) -> None:
        with self.lock:
            self.listener.handlers = tuple(handlers)  # the listener reads this per record

    def drain(self) -> None:
        thread = getattr(self.listener, "_thread", None)
        if thread is not None and thread is not threading.current_thread():
            self.queue.join()
        for handler in self.listener.handlers:
            handler.flush()


_state: _QueueState | None = None
_attached: list[logging.Handler] = []
"""Handlers added with `attach_handler`; they survive a `setup_logging` re-run."""


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
        # Message, traceback and extras were redacted once, before the queue.
        return json.dumps(entry, default=repr, ensure_ascii=False)


class ConsoleFormatter(logging.Formatter):
    """Human one-liners for stderr, with the context appended in brackets."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        ctx = " ".join(f"{k}={getattr(record, k)}" for k in CONTEXT_FIELDS if hasattr(record, k))
        return f"{text} [{ctx}]" if ctx else text


def _jsonable(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool | list | dict)


def _file_handler(path: Path, max_bytes: int, backup_count: int) -> logging.Handler:
    """The rotating JSON-lines file handler (its directory created first)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    file_handler = logging.handlers.RotatingFileHandler(
        path, maxBytes=max_bytes, backupCount=backup_count, encoding="utf-8"
    )
    file_handler.setFormatter(JsonFormatter())
    return file_handler


def _installed_queue(root: logging.Logger) -> _QueueState:
    """The running log queue (started on first use) with its redacting head first on `root`:
    one queue for the process, so a re-run of `setup_logging` only swaps its handlers."""
    global _state
    state = _state
    if state is None:
        q: queue.Queue[Any] = queue.Queue()
        listener = logging.handlers.QueueListener(q, respect_handler_level=True)
        head = _RedactingQueueHandler(q)
        setattr(head, _OURS, True)
        state = head.state = _QueueState(queue=q, listener=listener, head=head)
        listener.start()
        _state = state
    with logging._lock:  # type: ignore[attr-defined]  # what Logger.addHandler holds
        if state.head not in root.handlers:
            # First in line: the in-place redaction also covers handlers others put on root.
            root.handlers.insert(0, state.head)
    return state


def setup_logging(
    *,
    level: int | str = logging.INFO,
    directory: Path | None = None,
    console: bool = True,
    console_level: int | str | None = None,
    file: bool = True,
    max_bytes: int = 5 * 1024 * 1024,
    backup_count: int = 5,
) -> Path | None:
    """Install the log queue: the rotating JSON file (unless `file=False`) and stderr.

    Returns the log file path (None without a file). Idempotent: calling it again replaces
    the handlers it installed before and keeps those added with `attach_handler`, so the
    GUI can start with the console only and add the file once the log dir is known.
    """
    if max_bytes < 1024:
        raise ValueError(f"max_bytes must be >= 1024, got {max_bytes}")
    if backup_count < 1:
        raise ValueError(f"backup_count must be >= 1, got {backup_count}")
    handlers: list[logging.Handler] = []
    path: Path | None = None
    if file:
        directory = directory or log_dir()
        path = directory / LOG_FILE
        handlers.append(_file_handler(path, max_bytes, backup_count))
    if console:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(ConsoleFormatter())
        stream.setLevel(console_level if console_level is not None else level)
        handlers.append(stream)
    root = logging.getLogger()
    state = _installed_queue(root)
    # A re-run swaps the handlers on the running queue: no record is lost or left to
    # logging's unredacted last-resort handler in between.
    old, state.own = state.own, handlers
    state.set_handlers([*handlers, *_attached])
    state.drain()  # a record still going through the old handlers finishes first
    for handler in old:
        handler.close()
    root.setLevel(level)
    if path is not None:
        with contextlib.suppress(OSError):
            os.chmod(path, 0o600)  # logs hold addresses and CIDs: the user's business only
    return path


def attach_handler(handler: logging.Handler) -> None:
    """Hang `handler` off the log queue: it gets redacted records on the listener thread.

    Thread-affine handlers (the GUI's log pane) must hand records to their own thread,
    e.g. through a queued Qt signal. Raises RuntimeError before `setup_logging`.
    """
    if _state is None:
        raise RuntimeError("attach_handler: call setup_logging() first")
    if handler not in _attached:
        _attached.append(handler)
    _state.set_handlers([*_state.own, *_attached])


def detach_handler(handler: logging.Handler) -> None:
    """Stop feeding `handler`; records already queued for it may still arrive."""
    if handler in _attached:
        _attached.remove(handler)
    if _state is not None:
        _state.set_handlers([*_state.own, *_attached])


def flush_logging() -> None:
    """Block until every record logged so far has been written."""
    if _state is not None:
        _state.drain()


def teardown_logging() -> None:
    """Stop the listener (after it wrote every queued record), close what setup opened.

    Handlers added with `attach_handler` are detached, not closed: their owner closes them.
    """
    global _state
    state, _state = _state, None
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _OURS, False):
            root.removeHandler(handler)
            handler.close()
    _attached.clear()
    if state is None:
        return
    state.listener.stop()  # handles what is still queued, then joins the thread
    for handler in state.own:
        handler.close()


def log_files(directory: Path | None = None) -> list[Path]:
    """The current log and its rotated siblings, newest first."""
    directory = directory or log_dir()
    if not directory.is_dir():
        return []
    files = [p for p in directory.glob(LOG_FILE + "*") if p.is_file()]
    return sorted(files, key=lambda p: (p.name != LOG_FILE, p.name))
