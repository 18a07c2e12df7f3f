"""Say once, as a Notice, that a source cannot read; say it again only after it recovered.

A governor reads every second: a Notice per reading would flood the status bar and logs."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

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


class _ThisThreadOnly(logging.Filter):
    """Drops the records of one thread: a probe's, not another thread's warnings."""

    def __init__(self) -> None:
        super().__init__()
        self.thread = threading.get_ident()

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread != self.thread


@contextlib.contextmanager
def quiet_degraded() -> Iterator[None]:
    """Hold back `Degraded`'s warning for reads made in this thread, in this block: for a
    read whose failure is expected and reported elsewhere (probing which idle source
    works; /metrics reading NVML, whose absence is an absent series). Other threads'
    warnings still go out."""
    quiet = _ThisThreadOnly()
    degraded_log = logging.getLogger(__name__)
    degraded_log.addFilter(quiet)
    try:
        yield
    finally:
        degraded_log.removeFilter(quiet)
