"""The proof-of-work rule shared, byte for byte, with the on-chain contract.

preimage = gradientHash[32] ‖ minerAddress[20] ‖ roundId (uint64 BE) ‖ nonce (uint64 BE);
a nonce is valid when sha256(preimage), read as a big-endian 256-bit integer, is below
2^(256 − difficulty). This module is the single statement of that rule: the miner's search,
the `verify` command and the contract's tests all import it, so they cannot drift apart.
"""

from __future__ import annotations

import hashlib

from r3mes_desktop.core.errors import ValidationError

MIN_DIFFICULTY = 16
MAX_DIFFICULTY = 32
UINT64_MAX = 2**64 - 1
PREFIX_LEN = 32 + 20 + 8  # everything before the nonce


def validate_difficulty(difficulty: int) -> int:
    """Return `difficulty` if it is an int in 16..32, else raise a clear ValidationError."""
    if isinstance(difficulty, bool) or not isinstance(difficulty, int):
        raise ValidationError(
            f"difficulty must be an integer in {MIN_DIFFICULTY}..{MAX_DIFFICULTY}, "
            f"got {difficulty!r}"
        )
    if not MIN_DIFFICULTY <= difficulty <= MAX_DIFFICULTY:
        raise ValidationError(
            f"difficulty must be in {MIN_DIFFICULTY}..{MAX_DIFFICULTY} bits, got {difficulty}"
        )
    return difficulty


def miner_bytes(miner: str | bytes) -> bytes:
    """The 20-byte address from a 0x-hex string (any case) or raw bytes."""
    if isinstance(miner, bytes | bytearray):
        raw = bytes(miner)
    elif isinstance(miner, str):
        text = miner[2:] if miner.lower().startswith("0x") else miner
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raise ValidationError(
                f"miner must be a 20-byte hex address (0x + 40 hex digits), got {miner!r}"
            ) from None
    else:
        raise ValidationError(f"miner must be a hex string or 20 bytes, got {type(miner).__name__}")
    if len(raw) != 20:
        raise ValidationError(f"miner must be exactly 20 bytes, got {len(raw)}")
    return raw


def _check_uint64(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= UINT64_MAX:
        raise ValidationError(f"{name} must be an integer in 0..2**64-1, got {value!r}")
    return value


def pow_prefix(gradient_hash: bytes, miner: str | bytes, round_id: int) -> bytes:
    """The 60 bytes before the nonce: constant during a search (hash it once, copy the state)."""
    if not isinstance(gradient_hash, bytes | bytearray) or len(gradient_hash) != 32:
        raise ValidationError("gradient_hash must be exactly 32 bytes")
    return (
        bytes(gradient_hash)
        + miner_bytes(miner)
        + _check_uint64("round_id", round_id).to_bytes(8, "big")
    )


def pow_preimage(gradient_hash: bytes, miner: str | bytes, round_id: int, nonce: int) -> bytes:
    """gradientHash[32] ‖ minerAddress[20] ‖ roundId uint64 BE ‖ nonce uint64 BE (68 bytes)."""
    prefix = pow_prefix(gradient_hash, miner, round_id)
    return prefix + _check_uint64("nonce", nonce).to_bytes(8, "big")


def pow_digest(gradient_hash: bytes, miner: str | bytes, round_id: int, nonce: int) -> bytes:
    """sha256 of the preimage."""
    return hashlib.sha256(pow_preimage(gradient_hash, miner, round_id, nonce)).digest()


def pow_target(difficulty: int) -> int:
    """Digests (as big-endian integers) strictly below this value are valid."""
    return 1 << (256 - validate_difficulty(difficulty))


def is_valid_pow(
    gradient_hash: bytes, miner: str | bytes, round_id: int, nonce: int, difficulty: int
) -> bool:
    """True when the nonce satisfies the contract's rule at `difficulty` bits."""
    target = pow_target(difficulty)
    digest = pow_digest(gradient_hash, miner, round_id, nonce)
    return int.from_bytes(digest, "big") < target
