"""Slack and e-mail notifier against real local servers: threshold, grouping, secrets."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from r3mes_desktop.core.clock import ManualClock
from r3mes_desktop.core.events import EventBus, Notice, TransactionStateChanged
from r3mes_desktop.support.alerts import Alert
from r3mes_desktop.support.notify import ErrorNotifier, NotifierConfig
from tests.helpers.smtp_sink import smtp_sink

SECRET_PATH = "/services/T000/B000/XSECRETX"


@pytest.fixture
async def slack() -> AsyncIterator[tuple[str, list[Any], dict[str, int]]]:
    received: list[Any] = []
    reply = {"status": 200}

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(status=reply["status"], text="ok")

    app = web.Application()
    app.router.add_post(SECRET_PATH, hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}{SECRET_PATH}", received, reply
    finally:
        await runner.cleanup()


def _rollback(tx: str) -> TransactionStateChanged:
    return TransactionStateChanged(
        transaction_id=tx,
        round_id=1,
        old_state="ipfs_upload",
        new_state="rolled_back",
        failed_step="ipfs_upload",
        error_category="network",
        error_message="connection refused",
    )


async def _drain(notifier: ErrorNotifier) -> None:
    while notifier._tasks:
        await asyncio.gather(*list(notifier._tasks))


async def test_slack_gets_grouped_alerts_above_threshold(slack: Any) -> None:
    url, received, _ = slack
    clock = ManualClock()
    notifier = ErrorNotifier(
        NotifierConfig(slack_enabled=True, slack_webhook_url=url, min_severity="warning"),
        clock=clock,
    )
    bus = EventBus()
    notifier.attach(bus)
    bus.publish(Notice(level="info", message="below threshold"))
    for n in range(3):
        bus.publish(_rollback(f"tx{n:07d}"))
    await _drain(notifier)
    assert len(received) == 1
    assert "rolled back: IPFS unreachable" in received[0]["text"]
    clock.advance(61)
    notifier.flush()
    await _drain(notifier)
    assert len(received) == 2
    assert "3 transactions rolled back in the last 5 min: IPFS unreachable" in received[1]["text"]
    await notifier.close()


async def test_rate_limit_caps_sends_per_hour(slack: Any) -> None:
    url, received, _ = slack
    notifier = ErrorNotifier(
        NotifierConfig(slack_enabled=True, slack_webhook_url=url, max_per_hour=2),
        clock=ManualClock(),
    )
    for n in range(4):
        notifier.submit(Alert(level="error", title="t", message=f"m{n}"))
    await _drain(notifier)
    assert len(received) == 2 and notifier.dropped == 2


async def test_failures_never_log_the_webhook(slack: Any, caplog: Any) -> None:
    url, _, reply = slack
    reply["status"] = 500
    caplog.set_level(logging.DEBUG)
    notifier = ErrorNotifier(NotifierConfig(slack_enabled=True, slack_webhook_url=url))
    await notifier.send(Alert(level="error", title="t", message="m"))
    refused = ErrorNotifier(
        NotifierConfig(slack_enabled=True, slack_webhook_url="http://127.0.0.1:9" + SECRET_PATH)
    )
    await refused.send(Alert(level="error", title="t", message="m"))
    text = caplog.text
    assert "Slack notification failed: HTTP 500" in text
    assert "Slack notification failed: Client" in text
    assert "XSECRETX" not in text
    assert "XSECRETX" not in repr(notifier.config)


async def test_email_is_sent_and_password_not_logged(caplog: Any) -> None:
    caplog.set_level(logging.DEBUG)
    with smtp_sink() as sink:
        config = NotifierConfig(
            email_enabled=True,
            smtp_host="127.0.0.1",
            smtp_port=sink.port,
            smtp_starttls=False,
            email_from="miner@example.org",
            email_to=("me@example.org",),
        )
        notifier = ErrorNotifier(config)
        await notifier.send(Alert(level="error", title="Rollback", message="IPFS unreachable"))
    assert len(sink.messages) == 1
    assert "Subject: R3MES error: Rollback" in sink.messages[0]
    assert "IPFS unreachable" in sink.messages[0]
    bad = ErrorNotifier(
        NotifierConfig(
            email_enabled=True,
            smtp_host="127.0.0.1",
            smtp_port=9,
            smtp_username="u",
            smtp_password="PW-SECRET",
            email_from="a@b.cd",
            email_to=("a@b.cd",),
        )
    )
    await bad.send(Alert(level="error", title="t", message="m"))
    assert "e-mail notification failed: ConnectionRefusedError" in caplog.text
    assert "PW-SECRET" not in caplog.text
