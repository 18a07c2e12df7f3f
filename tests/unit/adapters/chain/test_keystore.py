"""The V3 keystore: create/import/unlock, 0600 files, and secrets that never leak."""

from __future__ import annotations

import logging
import stat
import traceback
from typing import ClassVar

import pytest
from eth_account import Account

from r3mes_desktop.adapters.chain.keystore import Keystore, PasswordVault
from r3mes_desktop.core.errors import AuthenticationError, ValidationError

FAST_N = 2**12  # scrypt cost for tests only
PASSWORD = "correct horse battery staple"
WRONG = "not-the-password-xyz"  # only ever passed by name: tracebacks show source lines
KEY_HEX = "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"


def _everything_written(tmp_path, caplog, *errors: BaseException) -> str:
    files = "".join(p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file())
    texts = ["".join(traceback.format_exception(e)) for e in errors]
    return files + caplog.text + "".join(texts)


def test_create_unlock_and_address(tmp_path, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    store = Keystore(tmp_path, scrypt_n=FAST_N)
    address = store.create(PASSWORD)
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert store.address() == address
    account = store.unlock(PASSWORD)
    assert account.address == address
    written = _everything_written(tmp_path, caplog)
    assert PASSWORD not in written and account.key.hex() not in written
    with pytest.raises(ValidationError, match="already exists"):
        store.create(PASSWORD)


def test_import_hex_and_wrong_password(tmp_path, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    store = Keystore(tmp_path, scrypt_n=FAST_N)
    address = store.import_hex("0x" + KEY_HEX, PASSWORD)
    assert address == Account.from_key(bytes.fromhex(KEY_HEX)).address
    with pytest.raises(AuthenticationError, match="wrong keystore password") as wrong:
        store.unlock(WRONG)
    assert wrong.value.__cause__ is None and wrong.value.__context__ is None
    written = _everything_written(tmp_path, caplog, wrong.value)
    assert KEY_HEX not in written and PASSWORD not in written
    assert WRONG not in written


@pytest.mark.parametrize(
    "bad",
    [
        "zz" * 32,  # not hex
        KEY_HEX[:-2],  # too short
        "0" * 64,  # zero is not a valid secp256k1 key
        "f" * 64,  # above the curve order
    ],
)
def test_invalid_hex_names_the_field_not_the_value(tmp_path, caplog, bad) -> None:
    store = Keystore(tmp_path, scrypt_n=FAST_N)
    with pytest.raises(ValidationError, match="private_key") as info:
        store.import_hex(bad, PASSWORD)
    assert info.value.__context__ is None
    assert bad not in _everything_written(tmp_path, caplog, info.value)
    assert not store.exists()


def test_missing_or_corrupt_keystore(tmp_path) -> None:
    store = Keystore(tmp_path, scrypt_n=FAST_N)
    with pytest.raises(ValidationError, match="no keystore"):
        store.unlock(PASSWORD)
    store.path.write_text("{not json")
    with pytest.raises(ValidationError, match="not a V3 keystore"):
        store.unlock(PASSWORD)
    with pytest.raises(ValidationError, match="password"):
        store.unlock("")


def test_keyring_is_used_only_after_opt_in(monkeypatch) -> None:
    import keyring
    from keyring.backend import KeyringBackend

    class MemoryKeyring(KeyringBackend):
        priority = 1  # type: ignore[assignment]
        values: ClassVar[dict[tuple[str, str], str]] = {}

        def get_password(self, service, username):
            return self.values.get((service, username))

        def set_password(self, service, username, password):
            self.values[(service, username)] = password

        def delete_password(self, service, username):
            self.values.pop((service, username), None)

    previous = keyring.get_keyring()
    keyring.set_keyring(MemoryKeyring())
    try:
        off = PasswordVault(opted_in=False, address="0xabc")
        assert off.store(PASSWORD) is False and off.get() is None
        assert MemoryKeyring.values == {}
        on = PasswordVault(opted_in=True, address="0xabc")
        assert on.store(PASSWORD) is True and on.get() == PASSWORD
        on.forget()
        assert on.get() is None
    finally:
        keyring.set_keyring(previous)


def test_no_keyring_backend_means_ask_the_user() -> None:
    import keyring
    from keyring.backends import fail

    previous = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())
    try:
        vault = PasswordVault(opted_in=True, address="0xabc")
        assert not vault.backend_available()
        assert vault.get() is None and vault.store(PASSWORD) is False
    finally:
        keyring.set_keyring(previous)
