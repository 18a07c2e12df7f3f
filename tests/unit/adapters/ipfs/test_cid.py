"""Local CIDs: known values, base-independent comparison, the multi-block DAG shape."""

from __future__ import annotations

import pytest

from r3mes_desktop.core.cid import (
    CHUNK_SIZE,
    DAG_PB,
    RAW,
    b58encode,
    compute_cid,
    parse_cid,
    same_cid,
)
from r3mes_desktop.core.errors import ValidationError


def test_known_raw_leaf_cid() -> None:
    # `ipfs add --cid-version=1 --raw-leaves` of the 5 bytes "hello" (Kubo and js-ipfs).
    assert compute_cid(b"hello") == "bafkreibm6jg3ux5qumhcn2b3flc3tyu6dmlb4xa7u5bf44yegnrjhc4yeq"


def test_base58_and_base32_forms_are_the_same_cid() -> None:
    cid = compute_cid(b"some gradient")
    zform = "z" + b58encode(parse_cid(cid).to_bytes())
    assert zform.startswith("zb2")
    assert same_cid(cid, zform) and same_cid(zform, cid.upper().replace("B", "B", 1))
    assert not same_cid(cid, compute_cid(b"other gradient"))


def test_multi_chunk_data_is_a_dag_pb_root() -> None:
    single = parse_cid(compute_cid(b"x" * CHUNK_SIZE))
    multi = parse_cid(compute_cid(b"x" * (CHUNK_SIZE + 1)))
    assert single.codec == RAW and multi.codec == DAG_PB
    assert compute_cid(b"x" * (CHUNK_SIZE + 1)) != compute_cid(b"x" * (CHUNK_SIZE + 2))


@pytest.mark.parametrize("text", ["", "x", "bafk!!", "zzzz0OIl", "f01551220", "b" + "a" * 10])
def test_garbage_cids_are_validation_errors(text) -> None:
    with pytest.raises(ValidationError, match="cid"):
        parse_cid(text)
