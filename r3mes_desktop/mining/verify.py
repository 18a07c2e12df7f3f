"""Check a submission the way a validator would: recompute the gradient, then the PoW.

Used by tests and by the `verify` CLI command. Recomputing trains the round in this
process (torch is imported lazily, only when a recomputation is asked for). Bit-identical
recomputation assumes the same plan, device type and thread count as the miner's run.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from r3mes_desktop.core.pow import is_valid_pow, validate_difficulty
from r3mes_desktop.core.steps import RoundSpec
from r3mes_desktop.mining.settings import MiningConfig
from r3mes_desktop.mining.worker import plan_for


@dataclass(frozen=True)
class VerificationReport:
    recomputed_hash: bytes | None  # None when recomputation was not asked for
    gradient_matches: bool  # claimed hash == recomputed hash (and == sha256(data) if given)
    pow_valid: bool

    @property
    def ok(self) -> bool:
        return self.gradient_matches and self.pow_valid

    def describe(self) -> str:
        parts = [
            "gradient: " + ("matches" if self.gradient_matches else "MISMATCH"),
            "proof of work: " + ("valid" if self.pow_valid else "INVALID"),
        ]
        return "; ".join(parts)


def verify_submission(
    *,
    spec: RoundSpec,
    miner: str | bytes,
    nonce: int,
    gradient_hash: bytes,
    data: bytes | None = None,
    recompute: bool = True,
    config: MiningConfig | None = None,
) -> VerificationReport:
    """Verify (round, miner, nonce, gradient hash[, uploaded bytes]) against the rules."""
    validate_difficulty(spec.difficulty)
    config = config or MiningConfig(device="cpu")
    matches = True
    if data is not None:
        matches = hashlib.sha256(data).digest() == gradient_hash
    recomputed: bytes | None = None
    if recompute:
        from r3mes_desktop.mining.training import train_round  # torch, only when needed

        plan = plan_for(spec, config)
        out = train_round(plan, device=config.device, num_threads=config.num_threads)
        recomputed = out.gradient_hash
        matches = matches and recomputed == gradient_hash
    pow_valid = is_valid_pow(gradient_hash, miner, spec.round_id, nonce, spec.difficulty)
    return VerificationReport(recomputed, matches, pow_valid)
