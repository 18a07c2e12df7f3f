"""Every node's wording of the same refusal lands on one kind and one error class.

A refusal read as "other" becomes a ValidationError: the transaction fails fast, and for a
consumed nonce the round was stranded (ganache's "doesn't have the correct nonce" did that).
"""

from __future__ import annotations

import pytest

from r3mes_desktop.adapters.chain.reverts import rejection_error
from r3mes_desktop.adapters.chain.transport import rejection_kind
from r3mes_desktop.core.errors import ErrorCategory

GANACHE = (
    "the tx doesn't have the correct nonce. account has nonce of: {account} tx has nonce of: {tx}"
)

TOO_LOW = [
    ("geth", "nonce too low: address 0xAbC…, tx: 3 state: 5"),
    ("erigon", "nonce too low"),
    ("anvil", "nonce too low"),
    ("hardhat", "Nonce too low. Expected nonce to be 5 but got 3. Note that transactions"),
    ("ganache", GANACHE.format(account=5, tx=3)),
    ("ganache 7", "Transaction nonce is too low"),
    ("nethermind", "OldNonce, Current nonce: 5, nonce of rejected tx: 3"),
]
TOO_HIGH = [
    ("geth", "nonce too high"),
    ("erigon", "nonce too distant"),
    ("anvil", "nonce too high"),
    ("hardhat", "Nonce too high. Expected nonce to be 3 but got 5."),
    ("ganache", GANACHE.format(account=3, tx=5)),
    ("nethermind", "NonceGap, Future nonce. Expected nonce: 3"),
    ("nethermind (far)", "NonceTooFarInFuture"),
]
UNDERPRICED = [
    ("geth", "replacement transaction underpriced"),
    ("erigon", "could not replace existing tx"),
    ("anvil", "replacement transaction underpriced"),
    ("reth", "insufficient gas price to replace existing transaction"),
    ("hardhat", "Replacement transaction underpriced. A gasPrice/maxFeePerGas of at least 2"),
    ("ganache", "transaction underpriced"),
    ("nethermind", "ReplacementNotAllowed"),
    ("nethermind (fee)", "FeeTooLowToCompete"),
]


@pytest.mark.parametrize(("node", "text"), TOO_LOW, ids=[n for n, _ in TOO_LOW])
def test_nonce_too_low_wordings(node: str, text: str) -> None:
    assert rejection_kind(text) == "nonce_too_low", node


@pytest.mark.parametrize(("node", "text"), TOO_HIGH, ids=[n for n, _ in TOO_HIGH])
def test_nonce_too_high_wordings_are_a_gap_and_retryable(node: str, text: str) -> None:
    assert rejection_kind(text) == "nonce_gap", node
    error = rejection_error("nonce_gap", text, where="node", account="0x" + "11" * 20)
    assert error.category is ErrorCategory.NETWORK


@pytest.mark.parametrize(("node", "text"), UNDERPRICED, ids=[n for n, _ in UNDERPRICED])
def test_underpriced_wordings_are_retryable(node: str, text: str) -> None:
    kind = rejection_kind(text)
    assert kind == "underpriced", node
    error = rejection_error(kind, text, where="node", account="0x" + "11" * 20)
    assert error.category is ErrorCategory.NETWORK


def test_an_unknown_refusal_stays_other() -> None:
    assert rejection_kind("exceeds block gas limit") == "other"
