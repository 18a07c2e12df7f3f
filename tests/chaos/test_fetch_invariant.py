"""The miner-side half of "no round trains on a version that failed verification": every
transaction that trained on a model version went through FETCH, which journaled the
adapter the contract publishes for it; one that failed in FETCH never trained. A clean
journal, then one fault at a time."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from bench.chaos.invariants import trained_on_verified
from r3mes_desktop.core.cid import compute_cid

ADAPTER = b"version 2 adapter"
CID, SHA = str(compute_cid(ADAPTER)), hashlib.sha256(ADAPTER).hexdigest()
PUBLISHED = {1: ("bafkother", "11" * 32), 2: (CID, SHA)}


def _row(state: str, *, version: int = 2, **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": f"tx-{state}",
        "round_id": 5,
        "state": state,
        "spec": json.dumps({"model_version": version}),
        "failed_step": None,
        "gradient_hash": "ab" * 32 if state in ("ipfs_upload", "committed") else None,
        "fetched": json.dumps({"adapter": {"cid": CID, "sha256": SHA, "path": "/m"}}),
    }
    row.update(fields)
    return row


def _check(rows: list[dict[str, Any]]) -> tuple[int, list[str]]:
    found: list[str] = []
    return trained_on_verified("m1", rows, PUBLISHED, found.append), found


def test_a_clean_journal_passes() -> None:
    rows = [
        _row("committed"),
        _row("ipfs_upload"),
        _row("failed", failed_step="fetch", fetched=None),  # refused, never trained
        _row("committed", version=0, fetched=None),  # the base model fetches nothing
        _row("fetch", fetched=None),
    ]
    assert _check(rows) == (2, [])


@pytest.mark.parametrize(
    ("row", "words"),
    [
        (_row("committed", fetched=None), "without FETCH journaling the adapter"),
        (
            _row("committed", fetched=json.dumps({"adapter": {"cid": CID, "sha256": "0" * 64}})),
            "the contract publishes",
        ),
        (_row("committed", version=3), "never published"),
        (
            _row("failed", failed_step="fetch", gradient_hash="cd" * 32),
            "failed in FETCH yet holds a gradient",
        ),
    ],
)
def test_each_fault_is_caught(row: dict[str, Any], words: str) -> None:
    _, found = _check([row])
    assert len(found) == 1 and words in found[0], found
