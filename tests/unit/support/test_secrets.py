"""Secrets store: 0600 file, atomic, never shown, registered with the redactor, keyring opt-in."""

from __future__ import annotations

import stat
import sys
import types
from pathlib import Path

import pytest

from r3mes_desktop.support.config import paths
from r3mes_desktop.support.redact import redact
from r3mes_desktop.support.secrets import (
    API_TOKEN,
    SLACK_WEBHOOK_URL,
    SMTP_PASSWORD,
    SecretsError,
    SecretsStore,
)

HOOK = "https://hooks.slack.com/services/T000/B000/abcdefSECRET"


def test_set_get_delete_in_a_0600_file() -> None:
    store = SecretsStore()
    assert store.path == paths().secrets_file
    assert store.get(SLACK_WEBHOOK_URL) is None
    store.set(SLACK_WEBHOOK_URL, HOOK)
    store.set(SMTP_PASSWORD, "correct horse battery")
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert SecretsStore().get(SLACK_WEBHOOK_URL) == HOOK
    assert store.names() == [SLACK_WEBHOOK_URL, SMTP_PASSWORD]
    assert store.delete(SLACK_WEBHOOK_URL) is True
    assert store.delete(SLACK_WEBHOOK_URL) is False
    assert store.get(SLACK_WEBHOOK_URL) is None
    assert store.get(SMTP_PASSWORD) == "correct horse battery"
    assert [p.name for p in store.path.parent.iterdir()] == ["secrets.json"]


def test_values_never_shown_and_are_redacted_in_logs() -> None:
    store = SecretsStore()
    store.set(API_TOKEN, "tok-1234567890-xyz")
    assert "tok-1234567890" not in repr(store)
    assert "tok-1234567890-xyz" not in redact("header was tok-1234567890-xyz")


def test_loose_permissions_are_tightened(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text('{"api_token": "abcdefgh"}')
    path.chmod(0o644)
    assert SecretsStore(path).get(API_TOKEN) == "abcdefgh"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    "content",
    ['{"api_token": "s3cr3t-value"', '["s3cr3t-value"]', '{"api_token": "s3cr3t-value", "n": 1}'],
)
def test_corrupt_file_is_an_error_without_values(tmp_path: Path, content: str) -> None:
    path = tmp_path / "s.json"
    path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(SecretsError) as info:
        SecretsStore(path).get(API_TOKEN)
    assert "s3cr3t" not in str(info.value)
    assert str(path) in str(info.value)


def test_bad_names_and_values_are_refused() -> None:
    store = SecretsStore()
    with pytest.raises(ValueError, match="accepted"):
        store.set("Bad Name", "value123")
    with pytest.raises(ValueError, match="non-empty"):
        store.set(API_TOKEN, "")


def test_keyring_is_used_when_opted_in(monkeypatch: pytest.MonkeyPatch) -> None:
    vault: dict[tuple[str, str], str] = {}
    fake = types.ModuleType("keyring")
    fake.get_password = lambda svc, name: vault.get((svc, name))  # type: ignore[attr-defined]
    fake.set_password = lambda svc, name, v: vault.__setitem__((svc, name), v)  # type: ignore[attr-defined]
    fake.delete_password = lambda svc, name: vault.pop((svc, name))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "keyring", fake)
    file_store = SecretsStore()
    file_store.set(SMTP_PASSWORD, "old-file-password")
    store = SecretsStore(use_keyring=True)
    store.set(SMTP_PASSWORD, "in-the-keyring")
    assert vault == {("r3mes-desktop", SMTP_PASSWORD): "in-the-keyring"}
    assert file_store.names() == []  # moved out of the file
    assert store.get(SMTP_PASSWORD) == "in-the-keyring"
    assert store.delete(SMTP_PASSWORD) is True
    assert vault == {}


def test_broken_keyring_falls_back_to_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("keyring")

    def fail(*args: object) -> None:
        raise RuntimeError("no backend")

    fake.get_password = fail  # type: ignore[attr-defined]
    fake.set_password = fail  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "keyring", fake)
    store = SecretsStore(use_keyring=True)
    store.set(API_TOKEN, "fallback-token")
    assert SecretsStore().get(API_TOKEN) == "fallback-token"
    assert store.get(API_TOKEN) == "fallback-token"
