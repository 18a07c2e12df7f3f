"""E-mail alerts reach the SMTP server only over verified TLS when a password is involved."""

from __future__ import annotations

import base64
import logging
import ssl
from pathlib import Path
from typing import Any

import pytest

from r3mes_desktop.support.alerts import Alert
from r3mes_desktop.support.notify import ErrorNotifier, NotifierConfig
from tests.helpers.smtp_sink import TlsCerts, make_tls_certs, smtp_sink

PASSWORD = "smtp-Pw-0n1y-f0r-the-real-server"
ALERT = Alert(level="error", title="Rollback", message="IPFS unreachable")


def _config(port: int, **changes: Any) -> NotifierConfig:
    fields: dict[str, Any] = {
        "email_enabled": True,
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "smtp_username": "rig@example.org",
        "smtp_password": PASSWORD,
        "email_from": "rig@example.org",
        "email_to": ("me@example.org",),
        "timeout_s": 5.0,
    }
    fields.update(changes)
    return NotifierConfig(**fields)


def _b64_password() -> str:
    return base64.b64encode(f"\0rig@example.org\0{PASSWORD}".encode()).decode()


@pytest.fixture
def certs(tmp_path: Path) -> TlsCerts:
    return make_tls_certs(tmp_path)


async def test_starttls_to_an_untrusted_certificate_is_refused(
    certs: TlsCerts, caplog: Any
) -> None:
    caplog.set_level(logging.DEBUG)
    with smtp_sink(tls=certs.server) as sink:
        notifier = ErrorNotifier(_config(sink.port))  # the system trust store: test CA unknown
        await notifier.send(ALERT)
    assert sink.messages == [] and sink.auth == []
    (failure,) = notifier.email_failures
    assert failure.category == "tls"
    assert "SSLCertVerificationError" in failure.reason
    assert "the password was not sent" in failure.reason
    assert "e-mail notification failed: SSLCertVerificationError" in caplog.text
    assert PASSWORD not in caplog.text and _b64_password() not in caplog.text


async def test_implicit_tls_on_465_checks_the_certificate(
    certs: TlsCerts, monkeypatch: pytest.MonkeyPatch
) -> None:
    with smtp_sink(tls=certs.server, implicit_tls=True) as sink:
        monkeypatch.setattr("r3mes_desktop.support.notify.IMPLICIT_TLS_PORT", sink.port)
        refused = ErrorNotifier(_config(sink.port))
        await refused.send(ALERT)
        trusted = ErrorNotifier(_config(sink.port), tls_context=certs.client_context())
        await trusted.send(ALERT)
    assert [f.category for f in refused.email_failures] == ["tls"]
    assert trusted.email_failures == []
    assert sink.auth == [f"AUTH PLAIN {_b64_password()}"]  # only the trusting one logged in
    assert len(sink.messages) == 1 and "Subject: R3MES error: Rollback" in sink.messages[0]


async def test_starttls_with_a_trusted_certificate_sends(certs: TlsCerts) -> None:
    with smtp_sink(tls=certs.server) as sink:
        notifier = ErrorNotifier(_config(sink.port), tls_context=certs.client_context())
        await notifier.send(ALERT)
    assert notifier.email_failures == []
    assert sink.encrypted and sink.auth == [f"AUTH PLAIN {_b64_password()}"]
    assert len(sink.messages) == 1 and "IPFS unreachable" in sink.messages[0]


async def test_a_certificate_for_another_host_is_refused(tmp_path: Path) -> None:
    other = make_tls_certs(tmp_path, server_names=("mail.example.org",))
    with smtp_sink(tls=other.server) as sink:
        notifier = ErrorNotifier(_config(sink.port), tls_context=other.client_context())
        await notifier.send(ALERT)
    (failure,) = notifier.email_failures
    assert failure.category == "tls" and "mismatch" in failure.reason.lower()
    assert sink.auth == [] and sink.messages == []


async def test_a_server_without_starttls_never_gets_the_password() -> None:
    with smtp_sink() as sink:  # plain server: no STARTTLS offered
        notifier = ErrorNotifier(_config(sink.port), tls_context=ssl.create_default_context())
        await notifier.send(ALERT)
    (failure,) = notifier.email_failures
    assert failure.category == "tls" and "SMTPNotSupportedError" in failure.reason
    assert sink.auth == [] and sink.messages == []


async def test_a_plaintext_login_is_refused_before_connecting() -> None:
    with smtp_sink() as sink:
        notifier = ErrorNotifier(_config(sink.port, smtp_starttls=False))
        await notifier.send(ALERT)
    (failure,) = notifier.email_failures
    assert failure.category == "config"
    assert "smtp_starttls is false" in failure.reason and "port 465" in failure.reason
    assert sink.auth == [] and sink.messages == [] and sink.commands == []
