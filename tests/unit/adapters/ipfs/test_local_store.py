"""The devnet's on-disk content store: same CIDs as IPFS, durable pins, integrity on read."""

from __future__ import annotations

import os

import pytest

from r3mes_desktop.adapters.ipfs.local_store import LocalContentStore
from r3mes_desktop.core.cid import CHUNK_SIZE, compute_cid
from r3mes_desktop.core.errors import IntegrityError, PermanentError, ValidationError


async def test_add_pin_unpin_cat_and_restart(tmp_path) -> None:
    store = LocalContentStore(tmp_path)
    data = os.urandom(CHUNK_SIZE + 5)
    cid = await store.add_and_pin(data)
    assert cid == compute_cid(data)
    assert await store.add_and_pin(data) == cid  # idempotent
    assert await store.is_pinned(cid) and await store.cat(cid) == data
    assert (await store.stat(cid))["size"] == len(data)
    again = LocalContentStore(tmp_path)  # a restart
    assert await again.pins() == [cid]
    await again.unpin(cid)
    await again.unpin(cid)  # idempotent
    assert not await again.is_pinned(cid)
    assert again.gc() == 1
    with pytest.raises(PermanentError, match="not in the devnet store"):
        await again.cat(cid)
    assert not [p for p in tmp_path.rglob(".tmp-*")]


async def test_oversized_and_empty_are_refused(tmp_path) -> None:
    store = LocalContentStore(tmp_path, max_gradient_size_mb=1)
    with pytest.raises(ValidationError, match=r"max_gradient_size_mb=1 \(accepted"):
        await store.add_and_pin(b"x" * (1024 * 1024 + 1))
    with pytest.raises(ValidationError, match="gradient: empty"):
        await store.add_and_pin(b"")
    assert await store.pins() == []


async def test_corrupt_blob_is_an_integrity_error(tmp_path) -> None:
    store = LocalContentStore(tmp_path)
    cid = await store.add_and_pin(b"precious")
    (tmp_path / "blobs" / cid).write_bytes(b"tampered")
    with pytest.raises(IntegrityError, match="corrupt"):
        await store.cat(cid)
