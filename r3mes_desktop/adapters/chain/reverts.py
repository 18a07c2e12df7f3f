"""What a contract revert or a node's refusal means for the miner, as a classified error.

The reason strings are the contract's own (R3mesRounds.vy); anything unrecognised is a
validation error carrying the raw reason, so nothing is silently retried forever.
"""

from __future__ import annotations

from r3mes_desktop.core.errors import (
    AlreadySubmittedError,
    AuthenticationError,
    NetworkError,
    PermanentError,
    R3mesError,
    SignatureVoidError,
    ValidationError,
)

SERVICE = "chain"
DUPLICATE = "already submitted"


class NonceConsumedError(SignatureVoidError):
    """Our signed transaction's nonce was used by another transaction that landed first
    (a hand-sent one, a second rig on the same key, a filler): these exact bytes can never
    be mined, and the saga signs the same call again with a fresh nonce."""


def revert_error(reason: str | None, *, what: str, stored_cid: str | None = None) -> R3mesError:
    """Map a revert reason of `what` (e.g. "submitGradient for round 3") to an error."""
    text = (reason or "").strip()
    if text == DUPLICATE:
        return AlreadySubmittedError(
            f"{what}: this miner already submitted to the round (stored CID {stored_cid})",
            stored_cid=stored_cid,
            service=SERVICE,
        )
    if text == "bad proof of work":
        return ValidationError(
            f"{what}: the contract rejected the proof of work (digest not below the target)",
            service=SERVICE,
        )
    if text == "round not open":
        return PermanentError(
            f"{what}: the round is not open (closed or never opened)", service=SERVICE
        )
    if text == "round past deadline":
        return PermanentError(
            f"{what}: the round's deadline has passed; the contract refuses submissions",
            service=SERVICE,
        )
    if text == "no submission":
        return ValidationError(f"{what}: no submission by this miner in the round", service=SERVICE)
    if not text:
        return ValidationError(f"{what}: reverted without a reason", service=SERVICE)
    return ValidationError(f"{what}: reverted: {text[:200]}", service=SERVICE)


def rejection_error(kind: str, message: str, *, where: str, account: str) -> R3mesError:
    """Map a node's refusal of a raw transaction (kinds from transport.rejection_kind)."""
    detail = message[:200]
    if kind == "insufficient_funds":
        return AuthenticationError(
            f"{where}: account {account} has insufficient funds for gas ({detail})", service=SERVICE
        )
    if kind == "invalid_signature":
        return AuthenticationError(
            f"{where}: the node rejected the transaction signature ({detail})", service=SERVICE
        )
    if kind in ("underpriced", "nonce_gap"):
        return NetworkError(f"{where}: transaction not accepted yet ({detail})", service=SERVICE)
    return ValidationError(f"{where}: transaction rejected ({detail})", service=SERVICE)
