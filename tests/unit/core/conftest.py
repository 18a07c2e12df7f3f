"""The coordinator rig most core tests start from: fakes, a ManualClock, a real journal."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.helpers.coordinator_rig import Rig, make_rig


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    rig = make_rig(tmp_path)
    await rig.coordinator.start(background=False)
    yield rig
    await rig.coordinator.close()
