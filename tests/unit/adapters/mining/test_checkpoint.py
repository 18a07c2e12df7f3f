"""Checkpoint store: atomic pairs, pruning, corrupt fallback, disk guard, list/delete."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from r3mes_desktop.adapters.mining.checkpoint import CheckpointStore
from r3mes_desktop.core.clock import ManualClock
from r3mes_desktop.core.errors import ResourceError, ValidationError


def arrays(step: int) -> dict[str, np.ndarray]:
    return {"lora/b": np.full((3, 2), step, np.float32), "lora/a": np.arange(4, dtype=np.int64)}


def save(store: CheckpointStore, step: int, tx: str = "tx-1") -> None:
    store.save(tx, round_id=9, step=step, tensors=arrays(step), state={"step": step, "fp": "x"})


def test_save_load_list_delete(tmp_path: Path) -> None:
    clock = ManualClock()
    store = CheckpointStore(tmp_path, keep=2, min_free_bytes=0, clock=clock)
    for step in (2, 4, 6):
        save(store, step)
        clock.advance(10.0)
    loaded = store.load_latest("tx-1")
    assert loaded is not None
    assert loaded.state == {"step": 6, "fp": "x"}
    assert np.array_equal(loaded.tensors["lora/b"], arrays(6)["lora/b"])
    assert loaded.tensors["lora/a"].dtype == np.int64
    listed = store.list("tx-1")
    assert [c.step for c in listed] == [6, 4]  # keep=2 pruned step 2
    assert all(c.round_id == 9 and c.size_bytes > 0 for c in listed)
    assert [c.age_s for c in listed] == [10.0, 20.0]
    assert sorted(p.name for p in (tmp_path / "tx-1").iterdir()) == [
        "ckpt-000000004.json",
        "ckpt-000000004.safetensors",
        "ckpt-000000006.json",
        "ckpt-000000006.safetensors",
    ]
    save(store, 1, tx="tx-2")
    assert {c.transaction_id for c in store.list()} == {"tx-1", "tx-2"}
    assert store.delete("tx-1") == 2
    assert store.list("tx-1") == [] and store.load_latest("tx-1") is None


@pytest.mark.parametrize("damage", ["tensors", "record", "missing"])
def test_corrupt_newest_falls_back_with_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    store = CheckpointStore(tmp_path, keep=3, min_free_bytes=0)
    save(store, 3)
    save(store, 6)
    newest = tmp_path / "tx-1" / "ckpt-000000006"
    if damage == "tensors":
        blob = bytearray(newest.with_suffix(".safetensors").read_bytes())
        blob[-1] ^= 0xFF
        newest.with_suffix(".safetensors").write_bytes(bytes(blob))
    elif damage == "record":
        newest.with_suffix(".json").write_text("{ torn")
    else:
        newest.with_suffix(".safetensors").unlink()
    with caplog.at_level(logging.WARNING):
        loaded = store.load_latest("tx-1")
    assert loaded is not None and loaded.state["step"] == 3
    assert "falling back to the previous one" in caplog.text


def test_mismatching_plan_is_not_resumed(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, min_free_bytes=0)
    save(store, 3)
    assert store.load_latest("tx-1", expect={"fp": "other"}) is None
    assert store.load_latest("tx-1", expect={"fp": "x"}) is not None


def test_orphans_and_temp_files_are_cleaned(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, min_free_bytes=0)
    save(store, 1)
    directory = tmp_path / "tx-1"
    (directory / "ckpt-000000002.safetensors").write_bytes(b"half-written")  # no record
    (directory / "ckpt-000000003.json.tmp").write_bytes(b"{")
    save(store, 4)
    names = sorted(p.name for p in directory.iterdir())
    assert names == [
        "ckpt-000000001.json",
        "ckpt-000000001.safetensors",
        "ckpt-000000004.json",
        "ckpt-000000004.safetensors",
    ]


def test_low_disk_space_refuses_to_write(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, min_free_bytes=2**62)
    with pytest.raises(ResourceError, match=r"low disk space.*mining paused"):
        save(store, 1)
    assert list((tmp_path / "tx-1").iterdir()) == []


def test_transaction_id_is_validated(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    with pytest.raises(ValidationError, match="transaction_id"):
        store.list("../escape")
    with pytest.raises(ValidationError, match="keep_checkpoints"):
        CheckpointStore(tmp_path, keep=0)
