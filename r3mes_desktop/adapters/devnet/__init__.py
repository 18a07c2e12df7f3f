"""The embedded devnet: an EVM in a child process, local content store, dev keys and an
operator, so a newcomer mines end to end with zero setup.

`Devnet` is imported on first use, not with the package: the EVM child process imports
`devnet.evm_process` (and so this package), and eagerly importing `Devnet` there pulled in
the whole chain client and eth-account stack (about a second of CPU at every devnet
start, on the critical path of every restart).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from r3mes_desktop.adapters.devnet.devnet import Devnet

__all__ = ["Devnet"]


def __getattr__(name: str) -> Any:
    if name == "Devnet":
        from r3mes_desktop.adapters.devnet.devnet import Devnet

        return Devnet
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
