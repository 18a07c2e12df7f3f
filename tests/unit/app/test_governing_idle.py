"""`system_sources` reads idle time from the platform's source, not from X11 alone."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from r3mes_desktop.adapters.governor.idle import LogindIdle, NoIdleSource
from r3mes_desktop.app.governing import close_sources, system_sources
from r3mes_desktop.core.events import EventBus
from r3mes_desktop.core.governor import OnlyWhenIdle, Unknown
from tests.unit.adapters.governor.test_idle import (  # the private bus and fake logind
    FakeLogind,
    dbus_address,  # noqa: F401 - a fixture: pytest finds it by name in this module
)


@pytest.fixture
def no_display(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "XDG_SESSION_TYPE"):
        monkeypatch.delenv(name, raising=False)
    yield


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the Linux pick")
def test_logind_serves_idle_time_without_a_display(
    no_display: None,
    dbus_address: str,  # noqa: F811 - the imported fixture, injected by pytest
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", dbus_address)
    fake = FakeLogind(dbus_address)
    fake.start()
    try:
        sources = system_sources([OnlyWhenIdle(3)], EventBus())
        try:
            assert isinstance(sources.idle, LogindIdle)
            assert sources.idle.idle_seconds() == 0.0
        finally:
            close_sources(sources)
    finally:
        fake.stop()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the Linux pick")
def test_neither_display_nor_logind_reads_unknown_with_both_reasons(
    no_display: None, monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path}/no-bus")
    sources = system_sources([OnlyWhenIdle(3)], EventBus())
    assert isinstance(sources.idle, NoIdleSource)
    reading = sources.idle.idle_seconds()
    assert isinstance(reading, Unknown)
    assert reading.why.startswith("X11: no X display (DISPLAY is not set); logind: ")
