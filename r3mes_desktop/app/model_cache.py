"""Model versions on local disk: fetched once from the content store, verified, kept under a
size cap with the least recently used evicted first.

A file is only ever written whole (temp file, fsync, rename) and only after its sha256 is
the one the contract names, so a crash mid-fetch leaves nothing to trust and the next
fetch starts over; a cached file is re-hashed before each use, so a corrupted cache is
fetched again rather than trained on. A file bigger than the cache's cap is refused: it
could never be kept, and its size is the size limit of a fetch.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from pathlib import Path

from r3mes_desktop.core.errors import IntegrityError, ValidationError
from r3mes_desktop.core.steps import ContentStore

log = logging.getLogger(__name__)


class ModelCache:
    """`core.steps.ModelStore` over a content store (plain calls: the saga's caller retries)."""

    def __init__(self, store: ContentStore, root: Path, *, cap_bytes: int = 512 * 2**20) -> None:
        self.store = store
        self.root = root
        self.cap_bytes = cap_bytes
        # one fetch of a version at a time: rounds starting together on a new version would
        # otherwise each fetch it and write the same file at once
        self._fetching: dict[str, asyncio.Lock] = {}

    def _check_size(self, cid: str, size: int) -> None:
        if size > self.cap_bytes:
            raise ValidationError(
                f"{cid} is {size} bytes, more than the model cache's size cap "
                f"(model_cache_mb = {self.cap_bytes / 2**20:g} MB, R3MES_MODEL_CACHE_MB: "
                "raise it to fetch this); refused, never trained on"
            )

    def _path(self, sha256: str) -> Path:
        return self.root / f"{sha256}.safetensors"

    async def fetch(self, cid: str, sha256: str) -> str:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValidationError(f"model sha256: expected 64 lowercase hex digits, got {sha256!r}")
        async with self._fetching.setdefault(sha256, asyncio.Lock()):
            return await self._fetch(cid, sha256)

    async def _fetch(self, cid: str, sha256: str) -> str:
        path = self._path(sha256)
        if await asyncio.to_thread(_verified, path, sha256):
            await asyncio.to_thread(os.utime, path)  # most recently used
            return str(path)
        stat = getattr(self.store, "stat", None)  # the size first: refuse before downloading
        if stat is not None:
            self._check_size(cid, int((await stat(cid))["size"]))
        data = await self.store.cat(cid)
        self._check_size(cid, len(data))
        digest = hashlib.sha256(data).hexdigest()
        if digest != sha256:
            raise IntegrityError(
                f"model version {cid}: expected sha256 {sha256} (the contract's), its bytes "
                f"hash to {digest}; refused, never trained on",
                service="ipfs",
            )
        await asyncio.to_thread(self._store, path, data)
        log.info("model version %s fetched (%d bytes)", cid, len(data))
        return str(path)

    def _store(self, path: Path, data: bytes) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")  # one writer per version at a time (`_fetching`)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        self._evict(keep=path)

    def _evict(self, *, keep: Path) -> None:
        files = sorted(self.root.glob("*.safetensors"), key=lambda p: p.stat().st_mtime)
        total = sum(p.stat().st_size for p in files)
        for old in files:
            if total <= self.cap_bytes:
                break
            if old == keep:
                continue
            total -= old.stat().st_size
            old.unlink(missing_ok=True)
            log.info("model cache: evicted %s (least recently used)", old.name)


def _verified(path: Path, sha256: str) -> bool:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return False
    if hashlib.sha256(data).hexdigest() == sha256:
        return True
    log.warning("model cache: %s is corrupt; fetching it again", path.name)
    path.unlink(missing_ok=True)
    return False
