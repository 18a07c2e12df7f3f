"""The IPFS client against a js-ipfs daemon (the Kubo RPC API, independently implemented)."""

from __future__ import annotations

import os

import pytest

from r3mes_desktop.adapters.ipfs.client import IpfsClient
from r3mes_desktop.core.cid import CHUNK_SIZE, compute_cid, same_cid
from r3mes_desktop.core.errors import ValidationError

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("size", [1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * CHUNK_SIZE + 17])
async def test_add_pin_cat_matches_local_cid(jsipfs: str, size: int) -> None:
    """Single-block and multi-block (UnixFS DAG) data get the CID computed locally."""
    client = IpfsClient(jsipfs)
    data = os.urandom(size)
    cid = await client.add_and_pin(data)
    assert same_cid(cid, compute_cid(data))
    assert await client.is_pinned(cid)
    assert await client.cat(cid) == data
    assert (await client.stat(cid))["size"] == size
    assert cid in await client.pins()
    await client.unpin(cid)
    await client.unpin(cid)  # idempotent
    assert not await client.is_pinned(cid)
    await client.close()


async def test_oversized_is_refused_before_upload(jsipfs: str) -> None:
    client = IpfsClient(jsipfs, max_gradient_size_mb=1)
    before = await client.pins()
    with pytest.raises(ValidationError, match="max_gradient_size_mb=1"):
        await client.add_and_pin(b"x" * (1024 * 1024 + 1))
    assert await client.pins() == before
    await client.close()
