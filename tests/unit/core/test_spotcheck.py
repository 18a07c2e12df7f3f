"""Sampled verification's arithmetic: Merkle commitments, unpredictable picks, the bound."""

from __future__ import annotations

import hashlib
import random

import pytest

from r3mes_desktop.core.spotcheck import (
    detection_probability,
    leaf_hash,
    merkle_proof,
    merkle_root,
    pick_segments,
    samples_for,
    verify_proof,
)


def states(n: int) -> list[bytes]:
    return [f"checkpoint {i}".encode() for i in range(n)]


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13, 64])
def test_every_leaf_proves_its_place_and_nothing_else_does(n: int) -> None:
    leaves = [leaf_hash(s) for s in states(n)]
    root = merkle_root(leaves)
    for i, leaf in enumerate(leaves):
        proof = merkle_proof(leaves, i)
        assert verify_proof(root, leaf, i, n, proof)
        forged = leaf_hash(b"a different state")
        assert not verify_proof(root, forged, i, n, proof)
        if n > 1:
            assert not verify_proof(root, leaf, (i + 1) % n, n, proof)


def test_the_root_commits_to_every_state_and_their_order() -> None:
    leaves = [leaf_hash(s) for s in states(9)]
    root = merkle_root(leaves)
    swapped = [leaves[1], leaves[0], *leaves[2:]]
    assert merkle_root(swapped) != root
    changed = [*leaves[:4], leaf_hash(b"faked"), *leaves[5:]]
    assert merkle_root(changed) != root
    assert merkle_root(leaves[:8]) != root  # a dropped last state shows too


def test_a_leaf_cannot_pose_as_an_inner_node() -> None:
    leaves = [leaf_hash(s) for s in states(4)]
    root = merkle_root(leaves)
    inner = hashlib.sha256(b"\x01" + leaves[0] + leaves[1]).digest()
    other_pair = hashlib.sha256(b"\x01" + leaves[2] + leaves[3]).digest()
    # the pair of leaves 0 and 1 offered as one leaf of a 2-leaf tree: the count differs
    assert not verify_proof(root, inner, 0, 2, [other_pair])
    assert not verify_proof(root, inner, 0, 4, merkle_proof(leaves, 0)[1:])


def test_picks_are_deterministic_distinct_and_follow_the_randomness() -> None:
    block = bytes.fromhex("ab" * 32)
    picks = pick_segments(block, 64, 16)
    assert picks == pick_segments(block, 64, 16)
    assert len(set(picks)) == 16 and all(0 <= p < 64 for p in picks)
    assert picks != pick_segments(bytes.fromhex("cd" * 32), 64, 16)
    assert pick_segments(block, 5, 5) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ((b"x" * 32, 0, 1), "count"),
        ((b"x" * 32, 4, 5), "samples"),
        ((b"short", 4, 1), "randomness"),
    ],
)
def test_bad_pick_arguments_name_the_field(args: tuple[bytes, int, int], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        pick_segments(*args)


def test_the_formula_and_the_bound() -> None:
    assert detection_probability(64, 0, 16) == 0.0
    assert detection_probability(64, 16, 49) == 1.0  # more picks than honest segments
    for n in (68, 256, 1024, 4096):
        p = detection_probability(n, n // 4, 17)
        assert p >= 1 - 0.75**17 >= 0.99  # sampling without replacement only helps
    assert samples_for(64, 16, 0.99) == 15
    assert detection_probability(64, 16, samples_for(64, 16, 0.99)) >= 0.99
    assert detection_probability(64, 16, samples_for(64, 16, 0.99) - 1) < 0.99


def test_a_miner_faking_a_quarter_is_caught_99_percent_of_the_time() -> None:
    """Simulated: 2000 submissions, each faking a random quarter of 64 segments, checked at
    16 picks from fresh randomness; the empirical catch rate meets the formula's 99%."""
    rng = random.Random(7)
    n, samples, runs = 64, 16, 2000
    caught = 0
    for run in range(runs):
        faked = set(rng.sample(range(n), n // 4))
        block = hashlib.sha256(f"block {run}".encode()).digest()
        if faked & set(pick_segments(block, n, samples)):
            caught += 1
    expected = detection_probability(n, n // 4, samples)
    assert caught / runs >= 0.985  # 99.2 % expected; 2000 runs: ± 0.4 % (2 sigma)
    assert abs(caught / runs - expected) < 0.01
