"""Append-only, fsynced log of the raw transactions the devnet accepted.

The devnet's EVM lives in memory; its state is a pure function of the transactions it
executed, so replaying this log at start rebuilds it exactly (same hashes, same nonces, same
contract address). Records are length-prefixed with a CRC; a torn tail (crash mid-write) is
detected and truncated, never misread.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

_HEADER = struct.Struct(">II")  # length, crc32


class TxLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._valid_end = self._scan_end()
        if path.exists() and path.stat().st_size != self._valid_end:
            with path.open("r+b") as fh:  # drop a torn tail left by a crash
                fh.truncate(self._valid_end)
                os.fsync(fh.fileno())
        self._fh = path.open("ab")

    def _scan_end(self) -> int:
        end = 0
        for _, offset in self._iter_with_offsets():
            end = offset
        return end

    def _iter_with_offsets(self) -> Iterator[tuple[bytes, int]]:
        if not self.path.exists():
            return
        with self.path.open("rb") as fh:
            offset = 0
            while True:
                header = fh.read(_HEADER.size)
                if len(header) < _HEADER.size:
                    return
                length, crc = _HEADER.unpack(header)
                body = fh.read(length)
                if len(body) < length or zlib.crc32(body) != crc:
                    return
                offset += _HEADER.size + length
                yield body, offset

    def records(self) -> list[bytes]:
        return [body for body, _ in self._iter_with_offsets()]

    def records_with_ends(self) -> list[tuple[bytes, int]]:
        """Each record with the byte offset where it ends (a snapshot names its prefix)."""
        return list(self._iter_with_offsets())

    @property
    def end(self) -> int:
        """Bytes of valid records in the file (what a snapshot of the whole log covers)."""
        return self._valid_end

    def append(self, raw: bytes) -> None:
        """Write one record and fsync before returning: an acknowledged tx survives a crash."""
        self._fh.write(_HEADER.pack(len(raw), zlib.crc32(raw)) + raw)
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._valid_end += _HEADER.size + len(raw)

    def close(self) -> None:
        self._fh.close()
