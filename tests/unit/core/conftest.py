"""Fixtures the core tests share: a fresh journal, and the coordinator rig most start from
(fakes, a ManualClock, a real journal)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from r3mes_desktop.core.journal import Journal
from tests.helpers.coordinator_rig import Rig, make_rig


@pytest.fixture(params=["inline", "file"])
async def rig(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    """Both ways a gradient is journaled: a row of the journal, or a durable file."""
    rig = make_rig(tmp_path, inline_gradient_max=0 if request.param == "file" else 1 << 20)
    await rig.coordinator.start(background=False)
    yield rig
    await rig.coordinator.close()


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    j = Journal(tmp_path / "j.db")
    await j.open()
    yield j
    await j.close()
