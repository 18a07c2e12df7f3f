"""The binding and sampling rules (pure): assignments, manifests, picks, sample sizes."""

from __future__ import annotations

import hashlib
import math

import pytest

from r3mes_desktop.core import spotcheck, workproof
from r3mes_desktop.core.workproof import Manifest

A, B = "0x" + "11" * 20, "0x" + "22" * 20


def test_assignment_depends_on_seed_miner_and_round() -> None:
    base = workproof.assignment(7, A, 1)
    assert base == workproof.assignment(7, A.upper().replace("0X", "0x"), 1)
    assert len({base, workproof.assignment(8, A, 1), workproof.assignment(7, B, 1),
                workproof.assignment(7, A, 2)}) == 4  # fmt: skip
    assert 0 <= workproof.training_seed(base) < 2**63


@pytest.mark.parametrize(
    ("args", "field"),
    [((-1, A, 1), "round_seed"), ((1, A, 2**64), "round_id"), ((1, "0x12", 1), "miner")],
)
def test_assignment_names_the_bad_field(args, field) -> None:
    with pytest.raises(ValueError, match=field):
        workproof.assignment(*args)


@pytest.mark.parametrize("segments", [1, 4, 8, 20, 40, 200, 1000])
def test_the_sample_size_catches_a_quarter_faked_with_99_percent(segments) -> None:
    samples = workproof.samples_for_round(segments)
    faked = max(1, math.ceil(segments / 4))
    assert spotcheck.detection_probability(segments, faked, samples) >= 0.99
    if samples > 1:  # and it is the smallest that does
        assert spotcheck.detection_probability(segments, faked, samples - 1) < 0.99
    assert samples <= 17  # 1 - 0.75**17 >= 0.99 whatever the segment count


def test_picks_are_fixed_by_the_block_and_differ_between_blocks_and_miners() -> None:
    block = hashlib.sha256(b"block").digest()
    first = workproof.picks(block, 3, A, 200)
    assert first == workproof.picks(block, 3, A, 200)
    assert first == sorted(set(first)) and all(0 <= i < 200 for i in first)
    assert first != workproof.picks(hashlib.sha256(b"other").digest(), 3, A, 200)
    assert first != workproof.picks(block, 3, B, 200)
    with pytest.raises(ValueError, match="block_hash"):
        workproof.picks(b"short", 3, A, 200)


def _manifest(leaves: list[bytes], **changes: object) -> Manifest:
    fields: dict[str, object] = {
        "round_id": 1,
        "miner": A,
        "assignment": "ab" * 32,
        "steps": len(leaves) - 1,
        "segment_steps": 1,
        "leaves": tuple(x.hex() for x in leaves),
        "root": spotcheck.merkle_root(leaves).hex(),
        "device_type": "cpu",
        "threads": 1,
        "plan_fingerprint": "f" * 64,
    }
    fields.update(changes)
    return Manifest(**fields)  # type: ignore[arg-type]


def test_manifest_round_trip_and_shape_errors() -> None:
    leaves = [spotcheck.leaf_hash(bytes([i])) for i in range(5)]
    manifest = _manifest(leaves)
    assert Manifest.from_bytes(manifest.to_bytes()) == manifest
    assert manifest.segments == 4 and manifest.leaf(2) == leaves[2]
    with pytest.raises(ValueError, match="leaves for 9 steps"):
        Manifest.from_bytes(_manifest(leaves, steps=9).to_bytes())
    with pytest.raises(ValueError, match="root does not commit"):
        Manifest.from_bytes(_manifest(leaves, root="00" * 32).to_bytes())
    with pytest.raises(ValueError, match="expected version"):
        Manifest.from_bytes(_manifest(leaves, version=9).to_bytes())
    with pytest.raises(ValueError, match="not JSON"):
        Manifest.from_bytes(b"\xff")


def test_reason_texts_cover_every_code() -> None:
    assert workproof.reason_text(0) == "accepted"
    assert all(workproof.reason_text(int(r)) for r in workproof.Reason)
    assert workproof.reason_text(99) == "reason 99"
