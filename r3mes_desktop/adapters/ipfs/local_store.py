"""The devnet's content store: content-addressed files on disk, same CIDs as IPFS.

Implements `core.steps.ContentStore` with `compute_cid`, so a CID recorded on the devnet
chain is the CID the same bytes get on a real IPFS daemon. Writes are atomic (temp file,
fsync, rename) and pins are a durable JSON set, so a crash never leaves a half-written blob
or loses a pin; reads re-hash the blob so disk corruption surfaces as an IntegrityError.
"""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

from r3mes_desktop.adapters.ipfs.limits import check_size
from r3mes_desktop.core.artifacts import write_atomic_sync
from r3mes_desktop.core.cid import compute_cid, parse_cid, same_cid
from r3mes_desktop.core.errors import IntegrityError, PermanentError


class LocalContentStore:
    """ContentStore over a directory: blobs/<cid> and pins.json."""

    service = "ipfs"

    def __init__(self, root: Path, *, max_gradient_size_mb: int = 100) -> None:
        self.root = root
        self.blobs = root / "blobs"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self._pins_path = root / "pins.json"
        self.max_gradient_size_mb = max_gradient_size_mb
        self._lock = threading.Lock()

    def _key(self, cid: str) -> str:
        """Blobs are named by the canonical base32 CIDv1 of the content."""
        return str(parse_cid(cid))

    def _pins(self) -> set[str]:
        if not self._pins_path.exists():
            return set()
        try:
            data = json.loads(self._pins_path.read_text(encoding="utf-8"))
        except ValueError:
            raise IntegrityError(f"pin list {self._pins_path} is corrupt", service="ipfs") from None
        return set(data.get("pins", []))

    def _save_pins(self, pins: set[str]) -> None:
        write_atomic_sync(self._pins_path, json.dumps({"pins": sorted(pins)}).encode())

    def _add_sync(self, data: bytes) -> str:
        cid = compute_cid(bytes(data))
        path = self.blobs / cid
        with self._lock:
            if not path.exists():
                write_atomic_sync(path, bytes(data))
            pins = self._pins()
            if cid not in pins:
                pins.add(cid)
                self._save_pins(pins)
        return cid

    async def add_and_pin(self, data: bytes) -> str:
        check_size(data, self.max_gradient_size_mb)
        return await asyncio.to_thread(self._add_sync, data)

    def cid_of(self, data: bytes) -> str:
        return compute_cid(bytes(data))

    async def is_pinned(self, cid: str) -> bool:
        key = self._key(cid)
        return await asyncio.to_thread(lambda: key in self._pins())

    def _unpin_sync(self, key: str) -> None:
        with self._lock:
            pins = self._pins()
            if key in pins:
                pins.discard(key)
                self._save_pins(pins)

    async def unpin(self, cid: str) -> None:
        """Idempotent. The blob stays until `gc()`, as on IPFS."""
        await asyncio.to_thread(self._unpin_sync, self._key(cid))

    def _cat_sync(self, key: str) -> bytes:
        path = self.blobs / key
        if not path.exists():
            raise PermanentError(f"content {key} is not in the devnet store", service="ipfs")
        data = path.read_bytes()
        if not same_cid(compute_cid(data), key):
            raise IntegrityError(
                f"stored content for {key} is corrupt (hash mismatch)", service="ipfs"
            )
        return data

    async def cat(self, cid: str) -> bytes:
        return await asyncio.to_thread(self._cat_sync, self._key(cid))

    async def stat(self, cid: str) -> dict[str, Any]:
        key = self._key(cid)
        path = self.blobs / key
        if not path.exists():
            raise PermanentError(f"content {key} is not in the devnet store", service="ipfs")
        return {"cid": key, "size": path.stat().st_size}

    async def pins(self) -> list[str]:
        return sorted(await asyncio.to_thread(self._pins))

    def gc(self) -> int:
        """Delete unpinned blobs; returns how many were removed."""
        with self._lock:
            pins = self._pins()
            removed = 0
            for path in self.blobs.iterdir():
                if path.name not in pins and not path.name.endswith(".tmp"):
                    path.unlink()
                    removed += 1
        return removed
