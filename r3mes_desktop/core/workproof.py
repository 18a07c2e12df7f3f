"""Work bound to its miner, and the rules a validator checks it by (pure: no torch, no I/O).

**Assignment.** A miner's data and adapter initialisation in a round come from
`assignment(round seed, miner, round)`, the same sha256 the contract's `assignmentOf` returns.
Two miners of one round therefore train different batches from different starting adapters
and produce different updates; a miner cannot pick its own assignment, and an update copied
from another miner was trained on the other miner's assignment.

**Commitment.** While training, the miner hashes its full training state (adapters, optimizer
moments, RNG states, step) every `segment_steps` steps. The uploaded package (whose sha256 is
the `gradientHash` on chain) carries a manifest naming the round, the miner, the assignment,
the device type and thread count, and every state hash (the leaves) with their Merkle root.

**Challenge.** The hash of the block that mined the submission is unknown to the miner when
it signs, so `challenge(block hash, round, miner)` picks `samples` segments it could not
predict. The miner answers in `completeTask` with the *openings*: the full states at the start
of each picked segment, the final state, and nothing else.

**Verdict.** A validator accepts only if: the package names the submitter and its assignment;
the first leaf is the state the assignment starts from; the final state's adapters are the
update; every opened state hashes to its leaf; and `segment_steps` steps from each opened start
state reproduce, bit for bit, the next leaf (same device type and thread count). A copier's
package names someone else (or, rewritten, fails the start state or a segment); a miner that
skipped or faked a fraction `f` of segments escapes only if no pick lands on one:
P(caught) = 1 - C(n - fn, s) / C(n, s) >= 1 - (1 - f)^s (`core.spotcheck`).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from enum import IntEnum
from typing import Any

from r3mes_desktop.core import spotcheck

MANIFEST_VERSION = 1
MANIFEST_KEY = "meta/manifest"
"""The package's uint8 tensor holding the manifest's JSON bytes (safetensors has no other
portable place for it: `safetensors.numpy.load` drops the header metadata)."""

SEGMENT_STEPS = 1
"""Steps per committed segment. One: a validator's cost is (samples / steps) of the miner's
training, and a segment is the smallest unit a cheat can hide in."""

CHEAT_FRACTION = 0.25
DETECTION_TARGET = 0.99
"""The validator's sample size catches a miner who faked a quarter of its segments with
probability at least 99% (the issue's figure); `samples_for_round` computes it."""


class Reason(IntEnum):
    """The reason code a verdict carries on chain (0 exactly when accepted)."""

    ACCEPTED = 0
    NOT_BOUND = 1  # the package names another miner, round or assignment
    BAD_PACKAGE = 2  # unreadable, no manifest, wrong hash, or the CID's bytes are not the hash
    NO_OPENINGS = 3  # the challenge was not answered within the verification window
    BAD_OPENING = 4  # an opened state is not the committed leaf, or a pick is missing
    SEGMENT_MISMATCH = 5  # recomputing a picked segment gave another state
    BAD_START = 6  # the first committed state is not the assignment's starting state
    BAD_FINAL = 7  # the update is not the adapters of the final committed state

    @property
    def text(self) -> str:
        return _REASON_TEXT[self]


_REASON_TEXT = {
    Reason.ACCEPTED: "accepted",
    Reason.NOT_BOUND: "not bound to this miner (copied or for another round)",
    Reason.BAD_PACKAGE: "unreadable or inconsistent update package",
    Reason.NO_OPENINGS: "challenge not answered in the verification window",
    Reason.BAD_OPENING: "opened state does not match its commitment",
    Reason.SEGMENT_MISMATCH: "a sampled training segment did not reproduce",
    Reason.BAD_START: "training did not start from the assigned state",
    Reason.BAD_FINAL: "update is not the final committed state",
}


def reason_text(code: int) -> str:
    try:
        return Reason(code).text
    except ValueError:
        return f"reason {code}"


def assignment(round_seed: int, miner: str, round_id: int) -> bytes:
    """sha256(seed as 32 bytes ‖ miner's 20 address bytes ‖ round id as 8 bytes), exactly
    the contract's `assignmentOf`."""
    if not 0 <= round_seed < 2**256:
        raise ValueError(f"round_seed: expected 0..2**256-1, got {round_seed}")
    if not 0 <= round_id < 2**64:
        raise ValueError(f"round_id: expected 0..2**64-1, got {round_id}")
    raw = bytes.fromhex(miner.removeprefix("0x"))
    if len(raw) != 20:
        raise ValueError(f"miner: expected a 20-byte address, got {miner!r}")
    return hashlib.sha256(
        round_seed.to_bytes(32, "big") + raw + round_id.to_bytes(8, "big")
    ).digest()


def training_seed(assignment_digest: bytes) -> int:
    """The integer seed the training plan takes (63 bits of the assignment)."""
    return int.from_bytes(assignment_digest[:8], "big") >> 1


def challenge(block_hash: bytes, round_id: int, miner: str) -> bytes:
    """The randomness the picks come from: the submission block's hash, bound to the pair."""
    if len(block_hash) != 32:
        raise ValueError("block_hash: expected 32 bytes")
    raw = bytes.fromhex(miner.removeprefix("0x").lower())
    return hashlib.sha256(
        b"r3mes-challenge" + block_hash + raw + round_id.to_bytes(8, "big")
    ).digest()


def samples_for_round(segments: int) -> int:
    """How many segments a validator recomputes for a run of `segments` segments."""
    faked = max(1, math.ceil(segments * CHEAT_FRACTION))
    return spotcheck.samples_for(segments, faked, DETECTION_TARGET)


def picks(block_hash: bytes, round_id: int, miner: str, segments: int) -> list[int]:
    """The segment indexes (each from leaf i to leaf i+1) the challenge opens."""
    return spotcheck.pick_segments(
        challenge(block_hash, round_id, miner), segments, samples_for_round(segments)
    )


@dataclass(frozen=True)
class Manifest:
    """What the package commits to, beside the update's tensors."""

    round_id: int
    miner: str  # checksummed or not: compared case-insensitively
    assignment: str  # hex of `assignment(...)`
    steps: int
    segment_steps: int
    leaves: tuple[str, ...]  # hex leaf hashes of the states after 0, k, 2k, ..., steps
    root: str  # hex Merkle root over the leaves
    device_type: str  # "cpu" or "cuda": a validator reproduces on the same type
    threads: int
    plan_fingerprint: str
    version: int = MANIFEST_VERSION
    # (step, micro-batch after) for each out-of-memory retry, in order: a validator chunks
    # those steps the same way (the chunking changes the float sums); absent when none
    shrinks: tuple[tuple[int, int], ...] = ()

    @property
    def segments(self) -> int:
        return len(self.leaves) - 1

    def leaf(self, index: int) -> bytes:
        return bytes.fromhex(self.leaves[index])

    def to_bytes(self) -> bytes:
        data = asdict(self)
        data["leaves"] = list(self.leaves)
        if self.shrinks:
            data["shrinks"] = [list(shrink) for shrink in self.shrinks]
        else:
            del data["shrinks"]
        return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Manifest:
        """Parse and check the manifest's shape; `ValueError` names what is wrong."""
        try:
            data: dict[str, Any] = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"manifest: not JSON ({exc})") from None
        if not isinstance(data, dict) or data.get("version") != MANIFEST_VERSION:
            raise ValueError(f"manifest: expected version {MANIFEST_VERSION}")
        try:
            manifest = cls(
                round_id=int(data["round_id"]),
                miner=str(data["miner"]),
                assignment=str(data["assignment"]),
                steps=int(data["steps"]),
                segment_steps=int(data["segment_steps"]),
                leaves=tuple(str(x) for x in data["leaves"]),
                root=str(data["root"]),
                device_type=str(data["device_type"]),
                threads=int(data["threads"]),
                plan_fingerprint=str(data["plan_fingerprint"]),
                shrinks=tuple((int(step), int(micro)) for step, micro in data.get("shrinks", [])),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"manifest: missing or malformed field ({exc})") from None
        manifest.check_shape()
        return manifest

    def check_shape(self) -> None:
        if self.segment_steps < 1 or self.steps < 1:
            raise ValueError("manifest: steps and segment_steps must be positive")
        if self.segments != math.ceil(self.steps / self.segment_steps):
            raise ValueError(
                f"manifest: {len(self.leaves)} leaves for {self.steps} steps of "
                f"{self.segment_steps}; expected {math.ceil(self.steps / self.segment_steps) + 1}"
            )
        try:
            leaves = [bytes.fromhex(x) for x in self.leaves]
            root = bytes.fromhex(self.root)
        except ValueError:
            raise ValueError("manifest: leaves and root must be hex") from None
        if spotcheck.merkle_root(leaves) != root:
            raise ValueError("manifest: the root does not commit to the leaves")
        steps = [step for step, _ in self.shrinks]
        if steps != sorted(steps) or any(
            not 0 <= step < self.steps or micro < 1 for step, micro in self.shrinks
        ):
            raise ValueError(
                "manifest: shrinks must be (step, micro-batch) in step order, with steps in "
                f"0..{self.steps - 1} and micro-batches of at least 1"
            )


def segment_end(manifest: Manifest, index: int) -> int:
    """The training step at which leaf `index` was taken (the last segment may be short)."""
    return min(index * manifest.segment_steps, manifest.steps)
