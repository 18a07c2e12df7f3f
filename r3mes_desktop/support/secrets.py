"""Secrets that settings.toml must never hold: webhook URL, SMTP password, API token.

Stored in a 0600 JSON file in the data dir (written atomically, never world-readable even
for an instant: the temp file is created 0600), or in the OS keyring when the user opts in.
Every value read or written is registered with the log redactor, and `repr` never shows one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import stat
from pathlib import Path
from typing import Any

from r3mes_desktop.support.config.paths import APP_NAME, paths
from r3mes_desktop.support.config.store import write_atomic
from r3mes_desktop.support.redact import register_secret

log = logging.getLogger(__name__)

SLACK_WEBHOOK_URL = "slack_webhook_url"
SMTP_PASSWORD = "smtp_password"  # noqa: S105 - the name of a secret, not one
API_TOKEN = "api_token"  # noqa: S105 - the name of a secret, not one
_NAME = re.compile(r"^[a-z][a-z0-9_.]{0,63}$")


class SecretsError(RuntimeError):
    """The store cannot be read or written (the message never contains a value)."""


class SecretsStore:
    """get / set / delete by name. `use_keyring` tries the OS keyring first."""

    def __init__(self, path: Path | None = None, *, use_keyring: bool = False) -> None:
        self.path = path if path is not None else paths().secrets_file
        self.use_keyring = use_keyring

    def __repr__(self) -> str:
        return f"SecretsStore(path={str(self.path)!r}, use_keyring={self.use_keyring})"

    @staticmethod
    def _check(name: str) -> None:
        if not _NAME.match(name):
            raise ValueError(f"secret name {name!r} invalid: accepted [a-z][a-z0-9_.]{{0,63}}")

    def _read(self) -> dict[str, str]:
        if not self.path.exists():
            return {}
        mode = stat.S_IMODE(self.path.stat().st_mode)
        if mode & 0o077:
            log.warning("secrets file %s had mode %o; tightening to 600", self.path, mode)
            os.chmod(self.path, 0o600)
        try:
            data: Any = json.loads(self.path.read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise SecretsError(
                f"cannot read secrets file {self.path}: {type(exc).__name__}"
            ) from None
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise SecretsError(f"secrets file {self.path} is not a JSON object of strings")
        return {str(k): v for k, v in data.items()}

    def _write(self, data: dict[str, str]) -> None:
        payload = json.dumps(data, indent=2, sort_keys=True).encode("utf-8")
        write_atomic(self.path, payload, mode=0o600)

    def _keyring(self) -> Any | None:
        if not self.use_keyring:
            return None
        try:
            import keyring  # optional; a missing or broken backend falls back to the file
        except ImportError:
            return None
        return keyring

    def get(self, name: str) -> str | None:
        self._check(name)
        value: str | None = None
        ring = self._keyring()
        if ring is not None:
            with contextlib.suppress(Exception):
                value = ring.get_password(APP_NAME, name)
        if value is None:
            value = self._read().get(name)
        register_secret(value)
        return value

    def set(self, name: str, value: str) -> None:
        self._check(name)
        if not isinstance(value, str) or not value:
            raise ValueError(f"secret {name!r}: accepted a non-empty string")
        register_secret(value)
        ring = self._keyring()
        if ring is not None:
            try:
                ring.set_password(APP_NAME, name, value)
            except Exception as exc:
                log.warning("keyring unavailable (%s); storing %s in the file", exc, name)
            else:
                self._drop_from_file(name)
                return
        data = self._read()
        data[name] = value
        self._write(data)

    def delete(self, name: str) -> bool:
        """Remove `name` everywhere; returns whether it existed."""
        self._check(name)
        existed = False
        ring = self._keyring()
        if ring is not None:
            with contextlib.suppress(Exception):
                if ring.get_password(APP_NAME, name) is not None:
                    ring.delete_password(APP_NAME, name)
                    existed = True
        return self._drop_from_file(name) or existed

    def _drop_from_file(self, name: str) -> bool:
        data = self._read()
        if name not in data:
            return False
        del data[name]
        self._write(data)
        return True

    def names(self) -> list[str]:
        """Names stored in the file (keyring entries cannot be listed portably)."""
        return sorted(self._read())
