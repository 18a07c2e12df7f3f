"""Commitments of a bound training run that need no torch: the trace on disk, the update
package with its manifest, and the openings that answer a challenge.

The miner's saga (GUI or headless process, torch-free) seals and opens traces here; the
torch side (`trace`) writes states and checks them.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from r3mes_desktop.core import spotcheck, workproof
from r3mes_desktop.core.workproof import Manifest

OPENING_PREFIX = "state/"
MANIFEST_FILE = "manifest.json"
PACKAGE_HASH_FILE = "package.sha256"


def leaf_index(step: int, segment_steps: int, steps: int) -> int | None:
    """The leaf taken after `step`, or None when no state is committed there."""
    if step == steps:
        return -(-steps // segment_steps)
    return step // segment_steps if step % segment_steps == 0 else None


class TraceDir:
    """One training run's committed states on disk (`<index>.state`), written as it trains."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def state_path(self, index: int) -> Path:
        return self.path / f"{index:06d}.state"

    def write(self, index: int, raw: bytes) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path(index).with_suffix(".tmp")
        tmp.write_bytes(raw)
        os.replace(tmp, self.state_path(index))

    def read(self, index: int) -> bytes:
        return self.state_path(index).read_bytes()

    def leaves(self, count: int) -> list[bytes]:
        """Leaf hashes of states 0..count-1; a missing one is an incomplete trace."""
        missing = [i for i in range(count) if not self.state_path(i).exists()]
        if missing:
            raise FileNotFoundError(
                f"trace {self.path} lacks committed states {missing[:5]}: it cannot be opened"
            )
        return [spotcheck.leaf_hash(self.read(i)) for i in range(count)]

    def seal(self, manifest: Manifest, package: bytes) -> None:
        """Record what the package committed to: the prover finds the trace by its hash."""
        (self.path / MANIFEST_FILE).write_bytes(manifest.to_bytes())
        (self.path / PACKAGE_HASH_FILE).write_text(hashlib.sha256(package).hexdigest())


def find_trace(root: Path, gradient_hash: bytes) -> TraceDir | None:
    """The sealed trace whose package hashes to `gradient_hash`, if this machine has it."""
    if not root.is_dir():
        return None
    want = gradient_hash.hex()
    for marker in root.glob(f"*/{PACKAGE_HASH_FILE}"):
        if marker.read_text().strip() == want:
            return TraceDir(marker.parent)
    return None


def build_package(update: bytes, manifest: Manifest) -> bytes:
    """The update's tensors plus the manifest: the bytes whose sha256 goes on chain."""
    arrays = dict(st_load(update))
    arrays[workproof.MANIFEST_KEY] = np.frombuffer(manifest.to_bytes(), dtype=np.uint8).copy()
    return bytes(st_save({k: arrays[k] for k in sorted(arrays)}))


def read_package(data: bytes) -> tuple[dict[str, np.ndarray], Manifest | None]:
    """(update tensors, manifest or None when the package carries none)."""
    arrays = dict(st_load(data))
    raw = arrays.pop(workproof.MANIFEST_KEY, None)
    return arrays, None if raw is None else Manifest.from_bytes(raw.tobytes())


def build_openings(trace: TraceDir, manifest: Manifest, picked: Iterable[int]) -> bytes:
    """The states a challenge opens: each picked segment's start, and the final state."""
    indexes = sorted({*picked, manifest.segments})
    return bytes(
        st_save(
            {
                f"{OPENING_PREFIX}{i:06d}": np.frombuffer(trace.read(i), dtype=np.uint8).copy()
                for i in indexes
            }
        )
    )


def read_openings(data: bytes) -> dict[int, bytes]:
    return {
        int(key.removeprefix(OPENING_PREFIX)): value.tobytes()
        for key, value in st_load(data).items()
        if key.startswith(OPENING_PREFIX)
    }
