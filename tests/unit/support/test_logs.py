"""JSON-lines logs: context from contextvars, rotation, secrets never written."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from r3mes_desktop.support import logs
from r3mes_desktop.support.redact import SECRETS, register_secret

KEY = "0x" + "7f" * 32


@pytest.fixture
def logfile() -> Iterator[Path]:
    path = logs.setup_logging(level=logging.DEBUG, console=False)
    try:
        yield path
    finally:
        logs.teardown_logging()
        SECRETS.forget_all()


def _lines(path: Path) -> list[dict[str, object]]:
    for handler in logging.getLogger().handlers:
        handler.flush()
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_log_file_is_in_the_overridden_dir_and_private(logfile: Path, tmp_path: Path) -> None:
    assert logfile.parent == logs.log_dir()
    assert (logfile.stat().st_mode & 0o777) == 0o600
    logging.getLogger("r3mes.test").info("hello %s", "world", extra={"cid": "bafk1"})
    (entry,) = _lines(logfile)
    assert entry["msg"] == "hello world"
    assert entry["level"] == "INFO" and entry["logger"] == "r3mes.test"
    assert entry["cid"] == "bafk1"
    assert str(entry["ts"]).endswith("+00:00")


async def test_context_follows_each_task(logfile: Path) -> None:
    log = logging.getLogger("r3mes.coord")

    async def run(tx: str, round_id: int) -> None:
        with logs.log_context(transaction_id=tx, round_id=round_id):
            await asyncio.sleep(0)
            with logs.log_context(step="ipfs_upload", service="ipfs"):
                log.info("uploading")
            log.info("done")

    await asyncio.gather(run("tx-a", 1), run("tx-b", 2))
    log.info("outside")
    entries = _lines(logfile)
    uploads = {e["transaction_id"]: e for e in entries if e["msg"] == "uploading"}
    assert uploads["tx-a"]["round_id"] == 1 and uploads["tx-b"]["round_id"] == 2
    assert uploads["tx-a"]["step"] == "ipfs_upload" and uploads["tx-a"]["service"] == "ipfs"
    done = [e for e in entries if e["msg"] == "done"]
    assert all("step" not in e for e in done)
    (outside,) = [e for e in entries if e["msg"] == "outside"]
    assert "transaction_id" not in outside


def test_unknown_context_field_is_refused() -> None:
    with pytest.raises(ValueError, match="transaction_id"), logs.log_context(txid="x"):
        pass


def test_secrets_are_scrubbed_from_message_args_extras_and_tracebacks(logfile: Path) -> None:
    register_secret("CorrectHorseBatteryStaple")
    log = logging.getLogger("r3mes.keys")
    log.warning("unlocking with %s", "CorrectHorseBatteryStaple")
    log.info("settings %s", {"webhook_url": "https://hooks.slack.com/services/T/B/SECRETHOOK"})
    log.info("extra", extra={"password": "pw-in-extra-123"})
    try:
        raise RuntimeError(f"signing failed for key {KEY}")
    except RuntimeError:
        log.exception("boom token=abcdefSECRET")
    text = logfile.read_text()
    for secret in ("CorrectHorseBatteryStaple", "SECRETHOOK", "pw-in-extra-123", KEY[2:], "SECRET"):
        assert secret not in text
    entries = _lines(logfile)
    assert "RuntimeError: signing failed for key [REDACTED]" in str(entries[-1]["exc"])
    assert "Traceback" in str(entries[-1]["exc"])


def test_rotation_keeps_backup_count(tmp_path: Path) -> None:
    path = logs.setup_logging(directory=tmp_path, console=False, max_bytes=2048, backup_count=2)
    try:
        log = logging.getLogger("r3mes.rot")
        for i in range(200):
            log.info("line %d %s", i, "x" * 40)
        logs.flush_logging()  # the listener thread writes; wait for it
        files = logs.log_files(tmp_path)
        assert [p.name for p in files] == ["r3mes.log", "r3mes.log.1", "r3mes.log.2"]
        assert all(p.stat().st_size <= 2048 for p in files)
        assert files[0] == path
    finally:
        logs.teardown_logging()


def test_setup_is_idempotent_and_validates(tmp_path: Path, capfd: Any) -> None:
    logs.setup_logging(directory=tmp_path, console=True)
    path = logs.setup_logging(directory=tmp_path, console=True)
    try:
        ours = [h for h in logging.getLogger().handlers if getattr(h, "_r3mes_handler", False)]
        assert len(ours) == 1  # the queue's head; file and console hang off its listener
        logging.getLogger("r3mes.idem").warning("once only")
        logs.flush_logging()
        assert path is not None and path.read_text().count("once only") == 1
        assert capfd.readouterr().err.count("once only") == 1
    finally:
        logs.teardown_logging()
    assert not [h for h in logging.getLogger().handlers if getattr(h, "_r3mes_handler", False)]
    with pytest.raises(ValueError, match="max_bytes"):
        logs.setup_logging(directory=tmp_path, max_bytes=10)


class _Capture(logging.Handler):
    """Keeps everything a handler could leak: the formatted line and the raw record fields."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(message)s", validate=False))
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append(self.format(record))
        self.seen.append(repr(vars(record)))
        self.seen.append(repr(record.args) + str(record.exc_info and record.exc_info[1]))


def _log_secret_everywhere(secret: str) -> None:
    log = logging.getLogger("r3mes.leak")
    for level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL):
        log.log(level, "in the message %s", secret)
        log.log(level, "in args: %s", {"value": secret})
        log.log(level, "in extra", extra={"detail": f"value {secret}"})
    try:
        raise RuntimeError(f"failed with {secret}")
    except RuntimeError:
        log.exception("in the traceback")
        log.critical("in exc_info", exc_info=True, stack_info=True)


def test_a_registered_secret_reaches_no_handler_in_clear(tmp_path: Path, capfd: Any) -> None:
    secret = "rig-unlock-Secret-4711"
    register_secret(secret)
    root = logging.getLogger()
    early = _Capture()  # put on root before setup, as logging.basicConfig does
    root.addHandler(early)
    attached = _Capture()
    try:
        path = logs.setup_logging(directory=tmp_path, level=logging.DEBUG, console=True)
        late = _Capture()  # put on root after setup, as a window without the queue does
        root.addHandler(late)
        logs.attach_handler(attached)  # as the desktop app attaches its log pane
        _log_secret_everywhere(secret)
        logs.flush_logging()
        root.removeHandler(late)
    finally:
        root.removeHandler(early)
        logs.teardown_logging()
        SECRETS.forget_all()
    assert path is not None
    outputs = {
        "file": path.read_text(),
        "console": capfd.readouterr().err,
        "before setup": "\n".join(early.seen),
        "after setup": "\n".join(late.seen),
        "attached": "\n".join(attached.seen),
    }
    for name, text in outputs.items():
        assert secret not in text, name
        assert "in the traceback" in text and "failed with [REDACTED]" in text, name
    assert sum("in the message" in line for line in attached.seen[::3]) == 5
    assert "RuntimeError: failed with [REDACTED]" in outputs["attached"]


def test_attach_handler_needs_the_queue() -> None:
    with pytest.raises(RuntimeError, match="setup_logging"):
        logs.attach_handler(_Capture())
