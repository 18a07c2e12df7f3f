"""Suite-wide setup: Qt renders offscreen and no test touches the user's real dirs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Point the app's config/data/log dirs at a fresh temp dir for every test."""
    root = tmp_path_factory.mktemp("r3mes-home")
    saved = {k: os.environ.get(k) for k in ("R3MES_CONFIG_DIR", "R3MES_DATA_DIR", "R3MES_LOG_DIR")}
    os.environ["R3MES_CONFIG_DIR"] = str(root / "config")
    os.environ["R3MES_DATA_DIR"] = str(root / "data")
    os.environ["R3MES_LOG_DIR"] = str(root / "logs")
    try:
        yield root
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The GUI tests run last (otherwise in file order: the sort is stable).

    Once a QApplication exists, pytest-qt processes Qt events after *every* test, and
    anything a GUI test leaves behind in Qt (a pending deferred delete) then runs inside a
    Qt-free test: it has crashed core and mining tests. With the GUI last, no Qt-free test
    runs after a QApplication was made.
    """
    items.sort(key=lambda item: item.nodeid.startswith("tests/unit/gui/"))
