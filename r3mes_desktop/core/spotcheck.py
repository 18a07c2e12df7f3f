"""Sampled verification: commit to a run's intermediate states, check a few of them.

Recomputing a whole submission doubles the network's compute. Instead the miner commits to
the state of its training every `k` steps (the leaves: sha256 of each checkpoint's bytes)
with one Merkle root, published with the submission; once the submission is on chain,
randomness the miner could not know in advance (a later block hash) picks `samples`
segments, and a validator recomputes only those: from the committed state at a segment's
start, `k` steps, compared with the committed state at its end.

A miner that skipped or faked `f` of `n` segments survives one check only if every sampled
segment is an honest one. Sampling `s` distinct segments uniformly, that happens with the
hypergeometric probability C(n-f, s) / C(n, s), so

    P(caught) = 1 - C(n - f, s) / C(n, s)   ≥   1 - (1 - f/n)^s

(`detection_probability`; `samples_for` gives the smallest `s` reaching a target). With a
quarter of the segments faked, 17 samples catch the miner with probability ≥ 1 - 0.75^17
≈ 0.9925 whatever `n` is (15 suffice when n = 64), and the validator recomputes 17
segments instead of all of them.

Everything here is pure arithmetic on bytes (sha256 from the standard library): the
miner, the validator and the tests compute the same roots and the same picks.
"""

from __future__ import annotations

import hashlib
from math import comb

LEAF = b"\x00"
NODE = b"\x01"
ROOT = b"\x02"
"""Domain separation (as in RFC 6962): a leaf can never be passed off as an inner node, and
the root also commits to how many leaves there are."""


def leaf_hash(state: bytes) -> bytes:
    """The leaf for one committed state (its bytes, e.g. a safetensors checkpoint)."""
    return hashlib.sha256(LEAF + hashlib.sha256(state).digest()).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE + left + right).digest()


def _check_leaves(leaves: list[bytes]) -> None:
    if not leaves:
        raise ValueError("leaves: expected at least 1 leaf, got 0")
    if any(len(leaf) != 32 for leaf in leaves):
        raise ValueError("leaves: expected 32-byte hashes (leaf_hash of each state)")


def _levels(leaves: list[bytes]) -> list[list[bytes]]:
    """Every level from the leaves up; an odd node is carried up unpaired."""
    levels = [list(leaves)]
    while len(levels[-1]) > 1:
        level = levels[-1]
        up = [_node(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            up.append(level[-1])
        levels.append(up)
    return levels


def _bind(top: bytes, count: int) -> bytes:
    return hashlib.sha256(ROOT + count.to_bytes(8, "big") + top).digest()


def merkle_root(leaves: list[bytes]) -> bytes:
    """The root committing to `leaves`, their order and their number."""
    _check_leaves(leaves)
    return _bind(_levels(leaves)[-1][0], len(leaves))


def merkle_proof(leaves: list[bytes], index: int) -> list[bytes]:
    """The sibling hashes from leaf `index` up to the root (carried levels add none)."""
    _check_leaves(leaves)
    if not 0 <= index < len(leaves):
        raise ValueError(f"index: expected 0..{len(leaves) - 1}, got {index}")
    proof = []
    for level in _levels(leaves)[:-1]:
        sibling = index ^ 1
        if sibling < len(level):
            proof.append(level[sibling])
        index //= 2
    return proof


def verify_proof(root: bytes, leaf: bytes, index: int, count: int, proof: list[bytes]) -> bool:
    """Is `leaf` the `index`-th of `count` leaves under `root`?"""
    if not 0 <= index < count or len(leaf) != 32 or count >= 2**63:
        return False
    node, width, remaining = leaf, count, list(proof)
    while width > 1:
        sibling = index ^ 1
        if sibling < width:
            if not remaining:
                return False
            other = remaining.pop(0)
            node = _node(other, node) if index % 2 else _node(node, other)
        index //= 2
        width = (width + 1) // 2
    return not remaining and _bind(node, count) == root


def pick_segments(randomness: bytes, count: int, samples: int) -> list[int]:
    """`samples` distinct segment indexes out of `count`, drawn from `randomness` (e.g. the
    hash of a block mined after the submission) by hashing a counter: the same on every
    machine and Python version, and unknowable to the miner when it committed."""
    if count < 1:
        raise ValueError(f"count: expected at least 1 segment, got {count}")
    if not 1 <= samples <= count:
        raise ValueError(f"samples: expected 1..{count}, got {samples}")
    if len(randomness) < 16:
        raise ValueError("randomness: expected at least 16 bytes (a block hash)")
    pool = list(range(count))
    picked = []
    for i in range(samples):  # a Fisher-Yates draw with hash-derived indexes
        digest = hashlib.sha256(randomness + i.to_bytes(4, "big")).digest()
        j = i + int.from_bytes(digest, "big") % (count - i)
        pool[i], pool[j] = pool[j], pool[i]
        picked.append(pool[i])
    return sorted(picked)


def detection_probability(count: int, faked: int, samples: int) -> float:
    """P(at least one of `samples` distinct uniform picks lands on one of `faked` of `count`
    segments) = 1 - C(count - faked, samples) / C(count, samples)."""
    if count < 1 or not 0 <= faked <= count or not 0 <= samples <= count:
        raise ValueError(
            f"expected 0 <= faked <= count, 0 <= samples <= count, count >= 1; got "
            f"count={count}, faked={faked}, samples={samples}"
        )
    return 1.0 - comb(count - faked, samples) / comb(count, samples)


def samples_for(count: int, faked: int, target: float) -> int:
    """The fewest samples that catch `faked` of `count` segments with probability ≥ target."""
    if not 0.0 < target < 1.0:
        raise ValueError(f"target: expected a probability in (0, 1), got {target}")
    if faked < 1:
        raise ValueError(f"faked: expected at least 1 faked segment, got {faked}")
    for samples in range(1, count + 1):
        if detection_probability(count, faked, samples) >= target:
            return samples
    return count
