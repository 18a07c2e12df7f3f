"""The start-up heap is collected once and frozen before mining (a full garbage collection
over it stalled the GUI loop for ~100 ms of CPU while mining: bench.gui's worst stall)."""

from __future__ import annotations

import gc
import sys
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from r3mes_desktop.gui.app import runtime_opened
from r3mes_desktop.gui.heap import freeze_startup_heap


@pytest.fixture
def no_automatic_gc() -> Iterator[None]:
    """Only the collections the code under test runs; the test process unfrozen after."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.unfreeze()
        if was_enabled:
            gc.enable()


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the collector frees it


def _walked_by_a_full_collection(obj: object) -> bool:
    return any(o is obj for o in gc.get_objects())


async def test_objects_alive_at_start_up_are_frozen_and_garbage_is_collected_first(
    no_automatic_gc: None,
) -> None:
    long_lived = ["module-level", ["state"]]  # a list is always tracked
    garbage = _Node()
    garbage_ref = weakref.ref(garbage)
    del garbage
    assert _walked_by_a_full_collection(long_lived)
    walked_before = len(gc.get_objects())

    frozen = await freeze_startup_heap(late_imports=())

    assert not _walked_by_a_full_collection(long_lived)
    assert garbage_ref() is None  # collected, not frozen forever
    assert frozen >= walked_before // 2
    assert len(gc.get_objects()) < walked_before // 10


async def test_late_imports_are_imported_off_the_loop_thread_and_frozen(
    no_automatic_gc: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "heap_late_module.py").write_text(
        "import threading\nIMPORTED_ON = threading.get_ident()\nTABLE = {'k': [1, 2]}\n",
        encoding="utf-8",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "heap_late_module", raising=False)

    await freeze_startup_heap(late_imports=("heap_late_module",))

    module = sys.modules["heap_late_module"]
    assert threading.get_ident() != module.IMPORTED_ON  # imported off the loop thread
    assert not _walked_by_a_full_collection(module.TABLE)
    monkeypatch.delitem(sys.modules, "heap_late_module")


class _Actions:
    def __init__(self, log: list[str]) -> None:
        self.start = self
        self._log = log

    def trigger(self) -> None:
        self._log.append(f"start (frozen: {gc.get_freeze_count() > 0})")


class _Window:
    def __init__(self) -> None:
        self.log: list[str] = []
        self.window_actions = _Actions(self.log)

    def runtime_ready(self) -> None:
        self.log.append(f"ready (frozen: {gc.get_freeze_count() > 0})")


@pytest.mark.parametrize("start", [False, True])
async def test_the_app_freezes_the_heap_once_the_runtime_is_open_before_the_window_is_ready(
    no_automatic_gc: None, start: bool
) -> None:
    window: Any = _Window()
    assert gc.get_freeze_count() == 0

    await runtime_opened(window, start=start)

    assert gc.get_freeze_count() > 0
    expected = ["ready (frozen: True)"] + (["start (frozen: True)"] if start else [])
    assert window.log == expected
