"""The miner's key: an encrypted Ethereum V3 keystore (scrypt) in the data dir, mode 0600.

The private key exists in clear only inside the `LocalAccount` returned by `unlock`; it is
never written, logged, or put in an error message (errors say what was wrong, not the value).
Unlocked secrets are registered with the redactor as a second line of defence. The keystore
password may live in the OS keyring only when the user opted in (`PasswordVault`).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount

from r3mes_desktop.core.artifacts import write_atomic_sync
from r3mes_desktop.core.errors import AuthenticationError, ValidationError
from r3mes_desktop.support.redact import register_secret

log = logging.getLogger(__name__)

KEYSTORE_FILE = "miner-keystore.json"
DEFAULT_SCRYPT_N = 2**18  # eth-account's default: about a second to unlock, by design
KEYRING_SERVICE = "r3mes-desktop"
_HEX_KEY = re.compile(r"(0x)?[0-9a-fA-F]{64}")


def write_private_file(path: Path, text: str) -> None:
    """Atomic write of a 0600 file: the key file is never visible half-written or world-readable."""
    write_atomic_sync(path, text.encode("utf-8"), mode=0o600)


def _check_password(password: str) -> None:
    if not isinstance(password, str) or not password:
        raise ValidationError("password: must be a non-empty string")


class Keystore:
    """One miner keystore file in `directory`."""

    def __init__(self, directory: Path, *, scrypt_n: int = DEFAULT_SCRYPT_N) -> None:
        self.directory = directory
        self.path = directory / KEYSTORE_FILE
        self.scrypt_n = scrypt_n

    def exists(self) -> bool:
        return self.path.is_file()

    def create(self, password: str) -> str:
        """Generate a new key, encrypt it, write it; return the checksummed address."""
        _check_password(password)
        account = Account.create()
        return self._store(account.key, password)

    def import_hex(self, private_key_hex: str, password: str) -> str:
        """Import a raw private key given as 64 hex digits (0x optional)."""
        _check_password(password)
        text = private_key_hex.strip() if isinstance(private_key_hex, str) else ""
        if not _HEX_KEY.fullmatch(text):
            # Built outside any `except`: the offending value is not chained into the error.
            raise ValidationError(
                "private_key: expected 64 hexadecimal digits (32 bytes), optionally 0x-prefixed"
            )
        key = bytes.fromhex(text.removeprefix("0x").removeprefix("0X"))
        valid = True
        try:
            Account.from_key(key)
        except Exception:
            valid = False
        if not valid:
            raise ValidationError("private_key: not a valid secp256k1 key (zero or out of range)")
        return self._store(key, password)

    def _store(self, key: bytes, password: str) -> str:
        if self.exists():
            raise ValidationError(f"keystore: {self.path} already exists; refusing to overwrite")
        encrypted = Account.encrypt(key, password, kdf="scrypt", iterations=self.scrypt_n)
        write_private_file(self.path, json.dumps(encrypted))
        address = Account.from_key(key).address
        log.info("keystore written for %s at %s", address, self.path)
        return str(address)

    def _load(self) -> dict[str, Any]:
        if not self.exists():
            raise ValidationError(f"keystore: no keystore at {self.path}; create or import one")
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = None
        if not isinstance(data, dict) or ("crypto" not in data and "Crypto" not in data):
            raise ValidationError(f"keystore: {self.path} is not a V3 keystore file")
        return data

    def address(self) -> str:
        """The checksummed address, read from the file without unlocking."""
        data = self._load()
        raw = str(data.get("address", ""))
        if not re.fullmatch(r"(0x)?[0-9a-fA-F]{40}", raw):
            raise ValidationError(f"keystore: {self.path} has no valid address field")
        from eth_utils.address import to_checksum_address

        return str(to_checksum_address("0x" + raw.removeprefix("0x")))

    def unlock(self, password: str) -> LocalAccount:
        """Decrypt; a wrong password raises AuthenticationError with a plain message."""
        _check_password(password)
        data = self._load()
        ok = True
        key = b""
        try:
            key = bytes(Account.decrypt(data, password))
        except ValueError:
            ok = False
        if not ok:
            raise AuthenticationError(
                "wrong keystore password (the keystore could not be decrypted)", service="keys"
            )
        register_secret(password)
        register_secret(key.hex())
        register_secret("0x" + key.hex())
        account: LocalAccount = Account.from_key(key)
        return account


class PasswordVault:
    """Keeps the keystore password in the OS keyring, only when the user opted in.

    Without opt-in, or without a usable keyring backend, `get()` returns None and the caller
    asks the user. Never falls back to a plain file.
    """

    def __init__(self, *, opted_in: bool, address: str) -> None:
        self.opted_in = opted_in
        self.address = address

    @staticmethod
    def backend_available() -> bool:
        try:
            import keyring
            from keyring.backends import fail

            backend = keyring.get_keyring()
        except Exception:
            return False
        return not isinstance(backend, fail.Keyring) and getattr(backend, "priority", 0) > 0

    def get(self) -> str | None:
        if not self.opted_in or not self.backend_available():
            return None
        import keyring

        try:
            value = keyring.get_password(KEYRING_SERVICE, self.address)
        except Exception as exc:
            log.warning("keyring read failed: %s", type(exc).__name__)
            return None
        if value:
            register_secret(value)
        return value

    def store(self, password: str) -> bool:
        """Save the password if opted in and a backend exists; returns whether it was saved."""
        if not self.opted_in or not self.backend_available():
            return False
        import keyring

        try:
            keyring.set_password(KEYRING_SERVICE, self.address, password)
        except Exception as exc:
            log.warning("keyring write failed: %s", type(exc).__name__)
            return False
        return True

    def forget(self) -> None:
        if not self.backend_available():
            return
        import keyring

        try:
            keyring.delete_password(KEYRING_SERVICE, self.address)
        except Exception:
            log.info("no keyring entry to delete for %s", self.address)
