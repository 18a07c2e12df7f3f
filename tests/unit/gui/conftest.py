"""GUI test fixtures: offscreen Qt, a qasync loop marked running, and an `arun` helper.

The loop is created with `already_running=True`, so asyncio tasks started by widgets make
progress whenever pytest-qt spins the Qt event loop (waitSignal / waitUntil): the same
single-threaded arrangement as the real app, with no sleeps.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import qasync

T = TypeVar("T")


@pytest.fixture
def qloop(qapp: Any) -> Iterator[asyncio.AbstractEventLoop]:
    loop = qasync.QEventLoop(qapp, already_running=True)
    asyncio.set_event_loop(loop)
    try:
        yield loop
    finally:
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            gather = asyncio.gather(*pending, return_exceptions=True)
            deadline = loop.time() + 5
            while not gather.done() and loop.time() < deadline:
                qapp.processEvents()
        # Not loop.stop(): it calls QApplication.exit(), after which every nested Qt event
        # loop (pytest-qt's waits) returns at once for the rest of the session.
        loop._QEventLoop__is_running = False  # type: ignore[attr-defined]
        asyncio.events._set_running_loop(None)
        loop.close()
        asyncio.set_event_loop(None)


@pytest.fixture
def arun(qloop: asyncio.AbstractEventLoop, qtbot: Any) -> Callable[..., Any]:
    """Run a coroutine to completion on the Qt-driven loop: `result = arun(coro, timeout=5)`."""

    def run(coro: Awaitable[T], timeout: float = 10.0) -> T:
        task = asyncio.ensure_future(coro)
        qtbot.waitUntil(task.done, timeout=int(timeout * 1000))
        return task.result()

    return run
