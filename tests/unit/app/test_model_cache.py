"""Model versions are fetched once, verified, cached under a cap, and refetched if corrupt."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from r3mes_desktop.adapters.ipfs.local_store import LocalContentStore
from r3mes_desktop.app.model_cache import ModelCache
from r3mes_desktop.core.errors import IntegrityError, ValidationError


def _read(path: str) -> bytes:
    return Path(path).read_bytes()


def _write(path: str, data: bytes) -> None:
    Path(path).write_bytes(data)


class CountingStore:
    def __init__(self, inner: LocalContentStore) -> None:
        self.inner = inner
        self.cats = 0

    async def cat(self, cid: str) -> bytes:
        self.cats += 1
        return await self.inner.cat(cid)


async def test_fetch_verifies_caches_and_refetches_a_corrupt_copy(tmp_path) -> None:
    store = LocalContentStore(tmp_path / "store", max_gradient_size_mb=1)
    data = b"adapter bytes " * 100
    cid = await store.add_and_pin(data)
    sha = hashlib.sha256(data).hexdigest()
    counting = CountingStore(store)
    cache = ModelCache(counting, tmp_path / "models")  # type: ignore[arg-type]
    path = await cache.fetch(cid, sha)
    assert _read(path) == data and counting.cats == 1
    assert await cache.fetch(cid, sha) == path and counting.cats == 1  # cached
    _write(path, b"X" + data[1:])
    assert _read(await cache.fetch(cid, sha)) == data and counting.cats == 2
    with pytest.raises(IntegrityError, match="never trained on"):
        await cache.fetch(cid, "0" * 64)
    assert not (tmp_path / "models" / f"{'0' * 64}.safetensors").exists()
    with pytest.raises(ValidationError, match="64 lowercase hex"):
        await cache.fetch(cid, "not-a-hash")


async def test_the_least_recently_used_version_is_evicted_over_the_cap(tmp_path) -> None:
    store = LocalContentStore(tmp_path / "store", max_gradient_size_mb=1)
    blobs = [bytes([i]) * 4000 for i in range(3)]
    cids = [await store.add_and_pin(b) for b in blobs]
    shas = [hashlib.sha256(b).hexdigest() for b in blobs]
    cache = ModelCache(store, tmp_path / "models", cap_bytes=9000)
    first = await cache.fetch(cids[0], shas[0])
    second = await cache.fetch(cids[1], shas[1])
    os.utime(second, (1, 1))  # the first is now the more recently used
    os.utime(first, (2, 2))
    await cache.fetch(cids[2], shas[2])
    names = sorted(p.name for p in (tmp_path / "models").glob("*.safetensors"))
    assert names == sorted(f"{s}.safetensors" for s in (shas[0], shas[2]))


async def test_a_file_over_the_cap_is_refused_naming_the_limit(tmp_path) -> None:
    store = LocalContentStore(tmp_path / "store", max_gradient_size_mb=1)
    data = b"a" * 5000
    cid = await store.add_and_pin(data)
    cache = ModelCache(store, tmp_path / "models", cap_bytes=4096)
    read: list[str] = []
    cat = store.cat

    async def counted_cat(key: str) -> bytes:
        read.append(key)
        return await cat(key)

    store.cat = counted_cat  # type: ignore[method-assign]
    with pytest.raises(ValidationError, match=r"5000 bytes.*model_cache_mb = 0.00390625 MB"):
        await cache.fetch(cid, hashlib.sha256(data).hexdigest())
    assert list((tmp_path / "models").glob("*")) == []
    assert read == []  # refused on the store's stat, before downloading it


async def test_a_mismatch_names_the_cid_and_both_hashes(tmp_path) -> None:
    store = LocalContentStore(tmp_path / "store", max_gradient_size_mb=1)
    data = b"adapter"
    cid = await store.add_and_pin(data)
    actual = hashlib.sha256(data).hexdigest()
    with pytest.raises(IntegrityError) as refused:
        await ModelCache(store, tmp_path / "models").fetch(cid, "1" * 64)
    assert cid in refused.value.message
    assert "1" * 64 in refused.value.message and actual in refused.value.message


async def test_concurrent_fetches_of_one_version_fetch_it_once(tmp_path) -> None:
    """Rounds starting together on a new version all miss the cache: one fetch writes the
    file, the others find it verified (two writers of one file could expose a half-written
    one to a reader hashing it)."""
    import asyncio

    store = LocalContentStore(tmp_path / "store", max_gradient_size_mb=1)
    data = b"adapter bytes " * 1000
    cid = await store.add_and_pin(data)
    sha = hashlib.sha256(data).hexdigest()
    counting = CountingStore(store)
    cache = ModelCache(counting, tmp_path / "models")  # type: ignore[arg-type]
    paths = await asyncio.gather(*(cache.fetch(cid, sha) for _ in range(5)))
    assert counting.cats == 1
    assert len(set(paths)) == 1 and _read(paths[0]) == data
    assert [p.name for p in (tmp_path / "models").iterdir()] == [f"{sha}.safetensors"]
