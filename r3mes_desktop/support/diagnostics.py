"""Error detail files and the "Export diagnostics" zip.

A failed transaction leaves one JSON file saying what failed, why (the whole exception
chain with stacks), with what inputs, on what machine state (memory, disk, device), so a
bug report needs no back-and-forth. Everything written here passes through `redact` at
write time, and the zip is re-scrubbed file by file: a secret that slipped into a log
before it was registered still never leaves the machine.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib.metadata
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import traceback
import zipfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import psutil

from r3mes_desktop.core.errors import R3mesError, classify
from r3mes_desktop.core.events import Event, EventBus, TransactionStateChanged
from r3mes_desktop.support.config.paths import paths
from r3mes_desktop.support.logs import log_dir, log_files
from r3mes_desktop.support.redact import redact, redact_obj

log = logging.getLogger(__name__)

FAILURE_STATES = frozenset({"failed", "rolled_back", "compensating"})
MAX_CHAIN = 10
MAX_ERROR_FILES = 200
"""Oldest error files beyond this are deleted: a crash loop must not fill the disk."""
VERSIONED_PACKAGES = (
    "r3mes-desktop",
    "torch",
    "PySide6-Essentials",
    "qasync",
    "web3",
    "eth-account",
    "aiohttp",
    "aioipfs",
    "tenacity",
    "pydantic",
    "prometheus-client",
    "psutil",
    "safetensors",
    "numpy",
)


def errors_dir() -> Path:
    return log_dir() / "errors"


def data_dir() -> Path:
    return paths().data_dir


def exception_chain(exc: BaseException) -> list[dict[str, Any]]:
    """The exception, then its __cause__/__context__, each with its own frames."""
    chain: list[dict[str, Any]] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    link: str | None = None
    while current is not None and id(current) not in seen and len(chain) < MAX_CHAIN:
        seen.add(id(current))
        frames = traceback.extract_tb(current.__traceback__)
        entry: dict[str, Any] = {
            "type": f"{type(current).__module__}.{type(current).__qualname__}",
            "message": str(current),
            "category": classify(current).value,
            "link": link,
            "frames": [
                {"file": f.filename, "line": f.lineno, "function": f.name, "code": f.line}
                for f in frames
            ],
        }
        if isinstance(current, R3mesError):
            entry["service"] = current.service
            entry["retry_after"] = current.retry_after
        chain.append(entry)
        if current.__cause__ is not None:
            current, link = current.__cause__, "cause"
        elif current.__context__ is not None and not current.__suppress_context__:
            current, link = current.__context__, "context"
        else:
            current = None
    return chain


def device_info() -> dict[str, Any]:
    """What compute is there, without importing torch (only the worker process loads it)."""
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cpu_physical": psutil.cpu_count(logical=False),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }
    try:
        info["torch"] = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        info["torch"] = None
    info["gpus"] = _nvidia_gpus()
    return info


def _nvidia_gpus() -> list[dict[str, str]] | None:
    """GPUs as nvidia-smi reports them (None when there is no NVIDIA driver)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    query = "name,memory.total,memory.used,driver_version,temperature.gpu,utilization.gpu"
    try:
        out = subprocess.run(  # noqa: S603 - fixed arguments, resolved executable
            [smi, f"--query-gpu={query}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return [{"error": str(exc)}]
    keys = query.split(",")
    return [
        dict(zip(keys, (v.strip() for v in line.split(",")), strict=False))
        for line in out.splitlines()
        if line.strip()
    ]


def system_state(*, device: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Memory, disk and device facts at the moment of a failure (never raises)."""
    state: dict[str, Any] = {
        "time": dt.datetime.now(tz=dt.UTC).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "pid": os.getpid(),
    }
    try:
        vm = psutil.virtual_memory()
        proc = psutil.Process()
        state["memory"] = {
            "total_mb": vm.total // 2**20,
            "available_mb": vm.available // 2**20,
            "percent": vm.percent,
            "process_rss_mb": proc.memory_info().rss // 2**20,
        }
        state["cpu"] = {"percent": psutil.cpu_percent(interval=None)}
        if hasattr(os, "getloadavg"):
            state["cpu"]["loadavg"] = list(os.getloadavg())
    except (OSError, psutil.Error) as exc:
        state["memory"] = {"error": str(exc)}
    disks: dict[str, Any] = {}
    for name, path in (("data", data_dir()), ("logs", log_dir())):
        probe = path
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        try:
            usage = psutil.disk_usage(str(probe))
            disks[name] = {
                "path": str(path),
                "free_mb": usage.free // 2**20,
                "total_mb": usage.total // 2**20,
                "percent": usage.percent,
            }
        except OSError as exc:
            disks[name] = {"path": str(path), "error": str(exc)}
    state["disk"] = disks
    state["device"] = dict(device) if device is not None else device_info()
    return state


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)[:64] or "unknown"


def write_error_detail(
    *,
    transaction_id: str,
    exc: BaseException | None = None,
    error: Mapping[str, Any] | None = None,
    inputs: Mapping[str, Any] | None = None,
    context: Mapping[str, Any] | None = None,
    device: Mapping[str, Any] | None = None,
    directory: Path | None = None,
) -> Path:
    """Write one redacted error detail file and return its path.

    `exc` gives the chain and stacks; without it (a failure known only from the journal),
    `error` carries what is known (category, message, failed step).
    """
    directory = directory or errors_dir()
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(tz=dt.UTC)
    detail: dict[str, Any] = {
        "transaction_id": transaction_id,
        "written_at": now.isoformat(timespec="milliseconds"),
        "error": dict(error or {}),
        "exception_chain": exception_chain(exc) if exc is not None else [],
        "stack": traceback.format_exception(exc) if exc is not None else [],
        "inputs": dict(inputs or {}),
        "context": dict(context or {}),
        "system": system_state(device=device),
    }
    if exc is not None:
        detail["error"].setdefault("category", classify(exc).value)
        detail["error"].setdefault("message", str(exc))
        detail["error"].setdefault("type", type(exc).__name__)
    text = redact(json.dumps(redact_obj(detail), indent=2, default=repr))
    stamp = now.strftime("%Y%m%dT%H%M%S_%f")
    path = directory / f"error_{_safe_name(transaction_id)}_{stamp}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.chmod(tmp, 0o600)
    tmp.replace(path)
    _prune(directory)
    return path


def _prune(directory: Path) -> None:
    files = error_files(directory)
    for old in files[MAX_ERROR_FILES:]:
        old.unlink(missing_ok=True)


def error_files(directory: Path | None = None) -> list[Path]:
    """Error detail files, newest first."""
    directory = directory or errors_dir()
    if not directory.is_dir():
        return []
    return sorted(directory.glob("error_*.json"), key=lambda p: p.name, reverse=True)


StatusLookup = Callable[[str], Any]
"""Async function transaction id -> status object (with to_dict()) or dict, or None."""


class ErrorDetailRecorder:
    """Writes an error file whenever a transaction enters a failure state on the bus.

    The event carries the category and message; `lookup` (the coordinator's `status`)
    adds the journal's view (inputs: round, CID, tx hash, history). Writing happens in an
    executor so the event loop never waits for the disk.
    """

    def __init__(
        self,
        bus: EventBus,
        *,
        lookup: StatusLookup | None = None,
        directory: Path | None = None,
        device: Mapping[str, Any] | None = None,
    ) -> None:
        self._lookup = lookup
        self._directory = directory
        self._device = device
        self._tasks: set[asyncio.Future[Any]] = set()
        self.written: list[Path] = []
        self._unsubscribe = bus.subscribe(self._on_event)

    def close(self) -> None:
        self._unsubscribe()

    async def drain(self) -> None:
        """Wait for pending writes (shutdown, tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _on_event(self, event: Event) -> None:
        if not isinstance(event, TransactionStateChanged):
            return
        if event.new_state not in FAILURE_STATES or event.old_state in FAILURE_STATES:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._write(event, None)
            return
        task = loop.create_task(self._record(event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _record(self, event: TransactionStateChanged) -> None:
        status: Any = None
        if self._lookup is not None:
            try:
                status = await self._lookup(event.transaction_id)
            except Exception as exc:  # the file is still worth writing without it
                log.warning("status lookup for error file failed: %s", exc)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._write, event, status)

    def _write(self, event: TransactionStateChanged, status: Any) -> None:
        if status is not None and hasattr(status, "to_dict"):
            status = status.to_dict()
        try:
            path = write_error_detail(
                transaction_id=event.transaction_id,
                error={
                    "category": event.error_category,
                    "message": event.error_message,
                    "failed_step": event.failed_step,
                    "state": event.new_state,
                    "previous_state": event.old_state,
                },
                inputs={"round_id": event.round_id},
                context={"status": status} if status is not None else None,
                device=self._device,
                directory=self._directory,
            )
        except OSError as exc:
            log.error("could not write error detail file: %s", exc)
            return
        self.written.append(path)
        log.info("error detail written: %s", path.name, extra={"path": str(path)})


def versions() -> dict[str, Any]:
    found: dict[str, str | None] = {}
    for name in VERSIONED_PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return {
        "python": sys.version,
        "platform": platform.platform(),
        "frozen": bool(getattr(sys, "frozen", False)),
        "packages": found,
    }


def _json(value: Any) -> str:
    return redact(json.dumps(redact_obj(value), indent=2, sort_keys=True, default=repr))


def export_diagnostics(
    dest: Path,
    *,
    settings: Mapping[str, Any] | None = None,
    stats: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    log_directory: Path | None = None,
    errors_directory: Path | None = None,
) -> Path:
    """Write the bug-report zip: logs, error files, redacted settings, stats, versions.

    `dest` may be a directory (a timestamped name is chosen) or a .zip path.
    """
    if dest.suffix.lower() != ".zip":
        stamp = time.strftime("%Y%m%d-%H%M%S")
        dest = dest / f"r3mes-diagnostics-{stamp}.zip"
    dest.parent.mkdir(parents=True, exist_ok=True)
    logs_in = log_files(log_directory)
    errors_in = error_files(errors_directory)
    manifest: list[str] = []
    tmp = dest.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:

        def put(name: str, text: str) -> None:
            zf.writestr(name, redact(text))
            manifest.append(name)

        for path in logs_in:
            put(f"logs/{path.name}", _read_text(path))
        for path in errors_in:
            put(f"errors/{path.name}", _read_text(path))
        put("settings.json", _json(settings or {}))
        put("stats.json", _json(stats or {}))
        put("versions.json", _json(versions()))
        put("system.json", _json(system_state()))
        for name, value in (extra or {}).items():
            put(f"{_safe_name(name)}.json", _json(value))
        put("MANIFEST.txt", "\n".join([*manifest, "MANIFEST.txt"]) + "\n")
    os.chmod(tmp, 0o600)
    tmp.replace(dest)
    return dest


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"<unreadable: {exc}>"


def zip_texts(path: Path) -> Iterable[tuple[str, str]]:
    """Every member of a diagnostics zip as text (for tests and the GUI preview)."""
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            yield name, zf.read(name).decode("utf-8", errors="replace")
