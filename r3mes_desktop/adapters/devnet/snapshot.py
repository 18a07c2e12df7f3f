"""Durable snapshots of the devnet chain's database: a start restores the state and replays
only the log's tail, instead of executing every transaction ever sent again.

Why: replay costs about 30 ms per transaction in pure-Python py-evm, so a devnet with a few
thousand logged transactions took minutes to start (the chaos harness restarts it a hundred
times). The log (`TxLog`) stays the source of truth; a snapshot is a cache of the state after
the log's first `records` records, and is used only when everything about it checks out:

- written to a temporary file, fsynced, renamed over the old one, directory fsynced: a crash
  (even SIGKILL) mid-write leaves the previous snapshot or none, never a torn one;
- its last 32 bytes are the sha256 of all before them: a damaged file is ignored;
- it names the log prefix it was taken from (length and sha256): a snapshot of another or
  a rewritten log is ignored.

Whatever is ignored falls back to the full replay. Format (no pickle): magic, a JSON header
(u32 length first), then `entries` key/value pairs as (u32 key length, u32 value length, key,
value), then the digest.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MAGIC = b"R3MES-DEVNET-SNAPSHOT-1\n"
_U32 = struct.Struct(">I")
_PAIR = struct.Struct(">II")
_DIGEST = 32


@dataclass(frozen=True)
class Snapshot:
    """A restored snapshot: the database and where in the log it stands."""

    records: int  # log records the state covers
    log_offset: int  # bytes of the log those records span
    head: bytes  # canonical head block hash, checked after the restore
    entries: dict[bytes, bytes]


def prefix_sha256(log_path: Path, length: int) -> str | None:
    """sha256 of the log's first `length` bytes; None if the log is shorter."""
    digest = hashlib.sha256()
    left = length
    try:
        with log_path.open("rb") as fh:
            while left:
                chunk = fh.read(min(left, 1 << 20))
                if not chunk:
                    return None
                digest.update(chunk)
                left -= len(chunk)
    except FileNotFoundError:
        return None
    return digest.hexdigest()


def write(
    path: Path,
    entries: Mapping[bytes, bytes],
    *,
    records: int,
    log_path: Path,
    log_offset: int,
    head: bytes,
) -> None:
    """Replace the snapshot at `path` atomically (temp file, fsync, rename, fsync dir)."""
    log_sha = prefix_sha256(log_path, log_offset)
    if log_sha is None:
        raise ValueError(f"log {log_path} is shorter than {log_offset} bytes")
    header = json.dumps(
        {
            "records": records,
            "log_offset": log_offset,
            "log_sha256": log_sha,
            "head": head.hex(),
            "entries": len(entries),
        }
    ).encode()
    parts = [MAGIC, _U32.pack(len(header)), header]
    pack = _PAIR.pack
    for key, value in entries.items():
        parts.append(pack(len(key), len(value)))
        parts.append(key)
        parts.append(value)
    body = b"".join(parts)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as fh:
        fh.write(body)
        fh.write(hashlib.sha256(body).digest())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read(path: Path, log_path: Path) -> Snapshot | None:
    """The snapshot at `path` if it is intact and was taken from this log; else None (and
    the reason logged): the caller replays the whole log."""
    with contextlib.suppress(FileNotFoundError):
        path.with_name(path.name + ".tmp").unlink()  # a write a crash cut short
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        return _parse(data, log_path)
    except ValueError as exc:
        log.warning("devnet snapshot %s not used (%s): replaying the whole log", path, exc)
        return None


def _parse(data: bytes, log_path: Path) -> Snapshot:
    if len(data) < len(MAGIC) + _U32.size + _DIGEST or not data.startswith(MAGIC):
        raise ValueError("not a devnet snapshot")
    body, digest = data[:-_DIGEST], data[-_DIGEST:]
    if hashlib.sha256(body).digest() != digest:
        raise ValueError("checksum mismatch: damaged")
    pos = len(MAGIC)
    (size,) = _U32.unpack_from(body, pos)
    pos += _U32.size
    try:
        header = json.loads(body[pos : pos + size])
        records, offset = int(header["records"]), int(header["log_offset"])
        head, count, log_sha = (
            bytes.fromhex(header["head"]),
            int(header["entries"]),
            header["log_sha256"],
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"bad header: {exc}") from None
    pos += size
    if prefix_sha256(log_path, offset) != log_sha:
        raise ValueError(f"taken from another log (its first {offset} bytes differ)")
    entries: dict[bytes, bytes] = {}
    unpack = _PAIR.unpack_from
    view = memoryview(body)
    try:
        for _ in range(count):
            klen, vlen = unpack(body, pos)
            pos += _PAIR.size
            entries[bytes(view[pos : pos + klen])] = bytes(view[pos + klen : pos + klen + vlen])
            pos += klen + vlen
    except struct.error:
        raise ValueError("entries run past the end of the file") from None
    if pos != len(body):
        raise ValueError("entry count does not match the file")
    return Snapshot(records=records, log_offset=offset, head=head, entries=entries)
