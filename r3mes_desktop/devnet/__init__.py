"""The embedded devnet: an EVM in a child process, local content store, dev keys and an
operator, so a newcomer mines end to end with zero setup."""

from r3mes_desktop.devnet.devnet import Devnet

__all__ = ["Devnet"]
