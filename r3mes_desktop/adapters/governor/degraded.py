"""Say once, as a Notice, that a source cannot read; say it again only after it recovered.

A governor reads every second: a Notice per reading would flood the status bar and logs."""

from __future__ import annotations

import logging

from r3mes_desktop.core.events import EventBus, Notice
from r3mes_desktop.core.governor import Unknown

log = logging.getLogger(__name__)


class Degraded:
    def __init__(self, name: str, bus: EventBus | None) -> None:
        self.name = name
        self.bus = bus
        self._down = False

    def unknown(self, why: str) -> Unknown:
        """The reading as Unknown; a Notice the first time in a row."""
        if not self._down:
            self._down = True
            text = f"{self.name} cannot be read ({why}): the governor treats it as unknown"
            log.warning("%s", text)
            if self.bus is not None:
                self.bus.publish(Notice(level="warning", message=text, source="governor"))
        return Unknown(why)

    def ok(self) -> None:
        self._down = False
