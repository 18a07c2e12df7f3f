"""Slack and e-mail notifications of failures, grouped, rate-limited and secret-free.

Listens to the core `EventBus`, groups repeats with a `NoticeCenter` ("3 transactions
rolled back in the last 5 min: IPFS unreachable"), drops what is below the severity
threshold and caps sends per hour. The webhook URL and SMTP password come from the secrets
store and never appear in a log line or an error message: failures are logged by kind
("HTTP 404", "ConnectionRefusedError"), not by URL. No Qt here; the GUI and the headless
CLI both use it.

E-mail goes over verified TLS only when a password is involved: implicit TLS on port 465,
STARTTLS otherwise, both with `ssl.create_default_context()` (certificate chain and host
name checked), so the SMTP password cannot be handed to an impostor on the path. A login
over a plaintext connection is refused rather than attempted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import smtplib
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from r3mes_desktop.core.clock import SYSTEM_CLOCK, Clock
from r3mes_desktop.core.events import Event, EventBus
from r3mes_desktop.support.alerts import Alert, NoticeCenter, severity_rank

log = logging.getLogger(__name__)

IMPLICIT_TLS_PORT = 465
"""SMTP submission over TLS from the first byte (RFC 8314); other ports use STARTTLS."""


class PlaintextLoginRefused(ValueError):
    """A login was configured over a connection that would not be encrypted."""


@dataclass(frozen=True)
class EmailFailure:
    """Why an alert e-mail was not sent, in words safe for a log.

    `category` is one of: tls (certificate, host name, or no STARTTLS offered),
    authentication, config, network, smtp. `reason` names the exception type and, for TLS,
    the verifier's words; it never holds the password or the server's reply text.
    """

    category: str
    reason: str

    @classmethod
    def of(cls, exc: BaseException) -> EmailFailure:
        name = type(exc).__name__
        if isinstance(exc, ssl.SSLCertVerificationError):
            detail = exc.verify_message or "certificate verify failed"
            return cls("tls", f"{name}: {detail}; the password was not sent")
        if isinstance(exc, ssl.SSLError | smtplib.SMTPNotSupportedError):
            return cls("tls", f"{name}: no verified TLS session; the password was not sent")
        if isinstance(exc, smtplib.SMTPAuthenticationError):
            return cls("authentication", f"{name}: the server refused the SMTP login")
        if isinstance(exc, PlaintextLoginRefused):
            return cls("config", f"{name}: {exc}")
        if isinstance(exc, smtplib.SMTPException):
            return cls("smtp", name)
        return cls("network", name)

    def __str__(self) -> str:
        return f"{self.reason} [{self.category}]"


@dataclass(frozen=True)
class NotifierConfig:
    min_severity: str = "warning"
    slack_enabled: bool = False
    slack_webhook_url: str = field(default="", repr=False)
    email_enabled: bool = False
    smtp_host: str = ""
    smtp_port: int = 587
    smtp_starttls: bool = True
    smtp_username: str = ""
    smtp_password: str = field(default="", repr=False)
    email_from: str = ""
    email_to: tuple[str, ...] = ()
    max_per_hour: int = 20
    timeout_s: float = 10.0

    @classmethod
    def from_settings(cls, settings: Any, secrets: Any) -> NotifierConfig:
        """Settings fields + secrets (`SecretsStore`); a missing secret disables its channel."""
        from r3mes_desktop.support.secrets import SLACK_WEBHOOK_URL, SMTP_PASSWORD

        webhook = secrets.get(SLACK_WEBHOOK_URL) or ""
        return cls(
            min_severity=settings.notify_min_severity,
            slack_enabled=bool(settings.slack_enabled and webhook),
            slack_webhook_url=webhook,
            email_enabled=bool(settings.email_enabled and settings.smtp_host),
            smtp_host=settings.smtp_host,
            smtp_port=settings.smtp_port,
            smtp_starttls=settings.smtp_starttls,
            smtp_username=settings.smtp_username,
            smtp_password=secrets.get(SMTP_PASSWORD) or "",
            email_from=settings.email_from,
            email_to=tuple(settings.email_to),
        )

    @property
    def enabled(self) -> bool:
        return self.slack_enabled or self.email_enabled


class ErrorNotifier:
    def __init__(
        self,
        config: NotifierConfig,
        *,
        clock: Clock = SYSTEM_CLOCK,
        center: NoticeCenter | None = None,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.center = center or NoticeCenter(clock=clock)
        self._tls_context = tls_context
        self._sent: deque[float] = deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._unsubscribe: Callable[[], None] | None = None
        self.delivered: list[Alert] = []  # what went out (diagnostics and tests)
        self.dropped = 0
        self.email_failures: list[EmailFailure] = []  # why e-mails were not sent

    def reconfigure(self, config: NotifierConfig) -> None:
        """Live settings change: the next alert uses the new channels and threshold."""
        self.config = config

    # -- intake ---------------------------------------------------------------------------
    def attach(self, bus: EventBus) -> None:
        if self._unsubscribe is None:
            self._unsubscribe = bus.subscribe(self.on_event)

    def on_event(self, event: Event) -> None:
        alert = self.center.on_event(event)
        if alert is not None:
            self.submit(alert)

    def flush(self) -> None:
        """Send grouped alerts whose quiet interval passed (call every few seconds)."""
        for alert in self.center.flush():
            self.submit(alert)

    def submit(self, alert: Alert) -> None:
        if not self.config.enabled:
            return
        if severity_rank(alert.level) < severity_rank(self.config.min_severity):
            return
        now = self.clock.monotonic()
        while self._sent and now - self._sent[0] > 3600:
            self._sent.popleft()
        if len(self._sent) >= self.config.max_per_hour:
            self.dropped += 1
            log.warning(
                "notification rate limit reached: %d sent in the last hour", len(self._sent)
            )
            return
        self._sent.append(now)
        task = asyncio.ensure_future(self.send(alert))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- delivery -------------------------------------------------------------------------
    async def send(self, alert: Alert) -> None:
        if self.config.slack_enabled:
            await self._send_slack(alert)
        if self.config.email_enabled:
            await self._send_email(alert)
        self.delivered.append(alert)

    async def _send_slack(self, alert: Alert) -> None:
        import aiohttp

        payload = {"text": f"*R3MES {alert.level.upper()}: {alert.title}*\n{alert.message}"}
        timeout = aiohttp.ClientTimeout(total=self.config.timeout_s)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.post(self.config.slack_webhook_url, json=payload) as response,
            ):
                if response.status >= 300:
                    log.warning("Slack notification failed: HTTP %d", response.status)
        except Exception as exc:  # the URL is a secret: log the kind of failure only
            log.warning("Slack notification failed: %s", type(exc).__name__)

    async def _send_email(self, alert: Alert) -> None:
        cfg = self.config
        message = EmailMessage()
        message["Subject"] = f"R3MES {alert.level}: {alert.title}"
        message["From"] = cfg.email_from
        message["To"] = ", ".join(cfg.email_to)
        message.set_content(alert.message)

        try:
            await asyncio.to_thread(self._deliver_email, message)
        except Exception as exc:  # never the password, never the server's reply text
            failure = EmailFailure.of(exc)
            self.email_failures.append(failure)
            log.warning("e-mail notification failed: %s", failure)

    def _deliver_email(self, message: EmailMessage) -> None:
        """Connect (implicit TLS on 465, else STARTTLS when enabled), log in, send.

        Every TLS handshake verifies the certificate and the host name before the
        password is sent; `smtp_starttls = false` with a password is refused.
        """
        cfg = self.config
        context = self._tls_context or ssl.create_default_context()
        smtp: smtplib.SMTP
        if cfg.smtp_port == IMPLICIT_TLS_PORT:
            smtp = smtplib.SMTP_SSL(
                cfg.smtp_host, cfg.smtp_port, timeout=cfg.timeout_s, context=context
            )
        else:
            if cfg.smtp_username and not cfg.smtp_starttls:
                raise PlaintextLoginRefused(
                    f"smtp_starttls is false and smtp_port is {cfg.smtp_port}: the SMTP "
                    f"password would travel unencrypted; enable smtp_starttls or use port "
                    f"{IMPLICIT_TLS_PORT} (implicit TLS)"
                )
            smtp = smtplib.SMTP(cfg.smtp_host, cfg.smtp_port, timeout=cfg.timeout_s)
        with smtp:
            if cfg.smtp_starttls and cfg.smtp_port != IMPLICIT_TLS_PORT:
                smtp.starttls(context=context)
            if cfg.smtp_username:
                smtp.login(cfg.smtp_username, cfg.smtp_password)
            smtp.send_message(message)

    async def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
