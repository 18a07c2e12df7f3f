"""The shared PoW rule: layout, threshold and input validation."""

from __future__ import annotations

import hashlib

import pytest

from r3mes_desktop.core.errors import ValidationError
from r3mes_desktop.core.pow import (
    is_valid_pow,
    pow_digest,
    pow_preimage,
    pow_target,
    validate_difficulty,
)

GH = bytes(range(32))
MINER = "0x" + "ab" * 20


def test_preimage_layout() -> None:
    pre = pow_preimage(GH, MINER, 7, 0x0102030405060708)
    assert len(pre) == 68
    assert pre[:32] == GH
    assert pre[32:52] == b"\xab" * 20
    assert pre[52:60] == (7).to_bytes(8, "big")
    assert pre[60:] == bytes([1, 2, 3, 4, 5, 6, 7, 8])
    assert pow_preimage(GH, b"\xab" * 20, 7, 0x0102030405060708) == pre
    assert pow_digest(GH, MINER, 7, 1) == hashlib.sha256(pow_preimage(GH, MINER, 7, 1)).digest()


def test_validity_matches_threshold() -> None:
    found = 0
    for nonce in range(4000):
        value = int.from_bytes(pow_digest(GH, MINER, 1, nonce), "big")
        assert is_valid_pow(GH, MINER, 1, nonce, 16) == (value < 2 ** (256 - 16))
        found += value < 2**240
    assert pow_target(16) == 2**240
    assert found <= 4000


@pytest.mark.parametrize("bad", [15, 33, 0, -1, "20", 20.0, True])
def test_difficulty_range_error_names_field(bad: object) -> None:
    with pytest.raises(ValidationError, match=r"difficulty.*16\.\.32"):
        validate_difficulty(bad)  # type: ignore[arg-type]


def test_bad_inputs_rejected() -> None:
    with pytest.raises(ValidationError, match="gradient_hash"):
        pow_preimage(b"short", MINER, 1, 1)
    with pytest.raises(ValidationError, match="miner"):
        pow_preimage(GH, "0x1234", 1, 1)
    with pytest.raises(ValidationError, match="nonce"):
        pow_preimage(GH, MINER, 1, 2**64)
    with pytest.raises(ValidationError, match="round_id"):
        pow_preimage(GH, MINER, -1, 0)
