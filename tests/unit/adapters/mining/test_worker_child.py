"""The child's background checkpoint writer: overlaps training, one write at a time,
errors reach the training thread, nothing is left running."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from r3mes_desktop.adapters.mining.checkpoint import CheckpointStore
from r3mes_desktop.adapters.mining.worker_child import BackgroundSaver
from r3mes_desktop.core.errors import ResourceError

ARRAYS = {"lora/a": np.arange(6, dtype=np.float32)}


class GatedStore:
    """A store whose save blocks until released (no sleeping: an event gates it)."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.saved: list[int] = []

    def save(self, transaction_id: str, *, step: int, **_: Any) -> None:
        self.gate.wait(10)
        self.saved.append(step)


def test_writes_land_on_disk_and_the_next_submit_waits_for_the_previous(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, keep=3, min_free_bytes=0)
    saver = BackgroundSaver(store, "tx", round_id=5)
    assert saver.submit(10, ARRAYS, {"step": 10}) is None  # nothing was in flight
    assert saver.submit(20, ARRAYS, {"step": 20}) == 10  # waited: step 10 is on disk
    assert saver.wait() == 20
    assert saver.wait() is None
    assert [info.step for info in store.list("tx")] == [20, 10]
    loaded = store.load_latest("tx")
    assert loaded is not None and loaded.state == {"step": 20}
    assert saver.write_s > 0


def test_finished_does_not_block_while_a_write_is_in_flight() -> None:
    store = GatedStore()
    saver = BackgroundSaver(store, "tx", round_id=1)  # type: ignore[arg-type]
    saver.submit(4, ARRAYS, {})
    assert saver.finished() is None and store.saved == []
    store.gate.set()
    assert saver.wait() == 4 and store.saved == [4]
    assert saver.finished() is None


def test_a_failed_write_is_raised_in_the_training_thread_and_writes_nothing(
    tmp_path: Path,
) -> None:
    store = CheckpointStore(tmp_path, keep=3, min_free_bytes=2**62)  # "disk full"
    saver = BackgroundSaver(store, "tx", round_id=1)
    saver.submit(10, ARRAYS, {"step": 10})
    with pytest.raises(ResourceError, match="low disk space"):
        saver.wait()
    assert store.list("tx") == []
    assert saver.wait() is None  # the error is reported once
