"""Per-transaction training checkpoints: safetensors for arrays, JSON for the rest, no pickle.

Torch-free (numpy + safetensors.numpy), so the GUI can list and delete checkpoints
without importing torch. A checkpoint is two files: `<step>.safetensors` then
`<step>.json`; the JSON is written last and carries the tensors' sha256, so it is the
commit record — a crash mid-save leaves at most an orphan that cleanup removes. Both
writes are atomic (temp file, fsync, rename, fsync of the directory). Loading walks from
the newest checkpoint back, skipping (with a warning) any whose record or checksum is bad.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from r3mes_desktop.core.artifacts import write_atomic_sync
from r3mes_desktop.core.clock import Clock, SystemClock
from r3mes_desktop.core.errors import ResourceError, ValidationError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_TX_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")
_NAME_RE = re.compile(r"^ckpt-(\d{9})\.json$")


@dataclass(frozen=True)
class CheckpointInfo:
    transaction_id: str
    round_id: int
    step: int
    created_at: float
    age_s: float
    size_bytes: int
    path: Path


@dataclass(frozen=True)
class LoadedCheckpoint:
    info: CheckpointInfo
    tensors: dict[str, np.ndarray]
    state: dict[str, Any]


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` so a reader sees the old file or the new one, never a torn one."""
    try:
        write_atomic_sync(path, data)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise ResourceError(f"no space left writing {path.name}; mining paused") from exc
        raise


def validate_transaction_id(transaction_id: str) -> str:
    """Transaction ids name directories: refuse anything that could escape the root."""
    if not isinstance(transaction_id, str) or not _TX_RE.match(transaction_id):
        raise ValidationError(
            "transaction_id must be 1..128 characters of letters, digits, '_', '.', '-'"
        )
    return transaction_id


class CheckpointStore:
    """save / load_latest / list / delete, per transaction, under `root`."""

    def __init__(
        self,
        root: Path,
        *,
        keep: int = 3,
        min_free_bytes: int = 64 * 1024 * 1024,
        clock: Clock | None = None,
    ) -> None:
        if keep < 1:
            raise ValidationError(f"keep_checkpoints must be >= 1, got {keep}")
        self.root = Path(root)
        self.keep = keep
        self.min_free_bytes = min_free_bytes
        self.clock = clock or SystemClock()

    def _dir(self, transaction_id: str) -> Path:
        return self.root / validate_transaction_id(transaction_id)

    def _check_disk(self, directory: Path, needed: int) -> None:
        free = shutil.disk_usage(directory).free
        if free - needed < self.min_free_bytes:
            raise ResourceError(
                f"low disk space: {free / 2**20:.0f} MB free in {directory}, a checkpoint needs "
                f"{needed / 2**20:.1f} MB plus a {self.min_free_bytes / 2**20:.0f} MB reserve; "
                "mining paused until space is freed"
            )

    def save(
        self,
        transaction_id: str,
        *,
        round_id: int,
        step: int,
        tensors: dict[str, np.ndarray],
        state: dict[str, Any],
    ) -> CheckpointInfo:
        directory = self._dir(transaction_id)
        directory.mkdir(parents=True, exist_ok=True)
        blob = st_save({k: np.ascontiguousarray(tensors[k]) for k in sorted(tensors)})
        self._check_disk(directory, len(blob) + 65536)
        stem = f"ckpt-{step:09d}"
        atomic_write(directory / f"{stem}.safetensors", blob)
        created = self.clock.time()
        record = {
            "version": FORMAT_VERSION,
            "round_id": round_id,
            "step": step,
            "created_at": created,
            "tensors_sha256": hashlib.sha256(blob).hexdigest(),
            "tensors_size": len(blob),
            "state": state,
        }
        atomic_write(directory / f"{stem}.json", json.dumps(record, sort_keys=True).encode())
        self._prune(directory)
        size = len(blob) + (directory / f"{stem}.json").stat().st_size
        return CheckpointInfo(transaction_id, round_id, step, created, 0.0, size, directory)

    def _records(self, directory: Path) -> list[tuple[int, Path]]:
        if not directory.is_dir():
            return []
        found = []
        for entry in directory.iterdir():
            match = _NAME_RE.match(entry.name)
            if match:
                found.append((int(match.group(1)), entry))
        return sorted(found, reverse=True)

    def _prune(self, directory: Path) -> None:
        """Keep the newest `keep` checkpoints; drop orphans and leftover temp files."""
        records = self._records(directory)
        kept = {path.with_suffix("").name for _, path in records[: self.keep]}
        for _, path in records[self.keep :]:
            path.unlink(missing_ok=True)
        for entry in directory.iterdir():
            stem = entry.name.split(".", 1)[0]
            if entry.name.endswith(".tmp") or stem not in kept:
                entry.unlink(missing_ok=True)

    def load_latest(
        self, transaction_id: str, *, expect: dict[str, Any] | None = None
    ) -> LoadedCheckpoint | None:
        """The newest intact checkpoint whose state matches `expect` (e.g. the plan's
        fingerprint), or None. Corrupt ones are skipped with a warning, never deleted here."""
        directory = self._dir(transaction_id)
        for step, json_path in self._records(directory):
            try:
                record = json.loads(json_path.read_bytes())
                blob = json_path.with_suffix(".safetensors").read_bytes()
                if hashlib.sha256(blob).hexdigest() != record["tensors_sha256"]:
                    raise ValueError("tensor checksum mismatch")
                tensors = st_load(blob)
                state = dict(record["state"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning(
                    "checkpoint %s step %d is unreadable (%s); falling back to the previous one",
                    transaction_id,
                    step,
                    exc,
                )
                continue
            if expect and any(state.get(k) != v for k, v in expect.items()):
                log.warning("checkpoint %s step %d belongs to another plan", transaction_id, step)
                continue
            info = self._info(transaction_id, record, directory)
            return LoadedCheckpoint(info, tensors, state)
        return None

    def _info(self, transaction_id: str, record: dict[str, Any], directory: Path) -> CheckpointInfo:
        step = int(record["step"])
        size = int(record["tensors_size"]) + (directory / f"ckpt-{step:09d}.json").stat().st_size
        created = float(record["created_at"])
        return CheckpointInfo(
            transaction_id,
            int(record["round_id"]),
            step,
            created,
            max(0.0, self.clock.time() - created),
            size,
            directory,
        )

    def list(self, transaction_id: str | None = None) -> list[CheckpointInfo]:
        """Checkpoints (newest first per transaction); unreadable records are left out."""
        if transaction_id is not None:
            ids = [transaction_id]
        elif self.root.is_dir():
            ids = sorted(p.name for p in self.root.iterdir() if p.is_dir() and _TX_RE.match(p.name))
        else:
            ids = []
        out = []
        for tx in ids:
            directory = self._dir(tx)
            for _, path in self._records(directory):
                try:
                    out.append(self._info(tx, json.loads(path.read_bytes()), directory))
                except (OSError, ValueError, KeyError, TypeError):
                    continue
        return out

    def delete(self, transaction_id: str) -> int:
        """Remove every checkpoint of the transaction; returns how many were removed."""
        directory = self._dir(transaction_id)
        count = len(self._records(directory))
        if directory.is_dir():
            shutil.rmtree(directory)
        return count
