"""The single-instance claim is a lock: racing launches cannot both end up with a window."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from r3mes_desktop.gui.single_instance import SingleInstance

_CLAIM = textwrap.dedent(
    """
    import sys, time
    from PySide6.QtCore import QCoreApplication
    from r3mes_desktop.gui.single_instance import SingleInstance

    app = QCoreApplication([])
    instance = SingleInstance(sys.argv[1], lock_path=sys.argv[2], notify_patience_s=0.5)
    start = float(sys.argv[3])
    while time.time() < start:  # both processes claim at the same moment
        time.sleep(0.001)
    won = instance.claim()
    print("won" if won else "lost", flush=True)
    deadline = time.time() + 1.5  # hold the claim while the other one tries
    while time.time() < deadline:
        app.processEvents()
        time.sleep(0.01)
    instance.release()
    """
)

_CRASH = textwrap.dedent(
    """
    import os, sys
    from PySide6.QtCore import QCoreApplication, QLockFile
    from PySide6.QtNetwork import QLocalServer

    app = QCoreApplication([])
    lock = QLockFile(sys.argv[2])
    assert lock.tryLock(0)
    server = QLocalServer()
    assert server.listen(sys.argv[1])
    os._exit(0)  # no unlock, no close: what a crash leaves behind
    """
)


def _names(tmp_path: Path) -> tuple[str, str]:
    return f"r3mes-test-{tmp_path.name}", str(tmp_path / "data" / "desktop.lock")


def test_a_launch_that_saw_no_server_yet_still_loses(
    qtbot: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, lock_path = _names(tmp_path)
    first = SingleInstance(name, lock_path=lock_path)
    assert first.claim()
    second = SingleInstance(name, lock_path=lock_path, notify_patience_s=0.0)
    # The race: the second launch looked before the first was listening.
    monkeypatch.setattr(second, "notify_running", lambda timeout_ms=500: False)
    try:
        assert not second.claim()
        with qtbot.waitSignal(first.activated, timeout=3000):  # the first kept its socket
            assert SingleInstance(name, lock_path=lock_path).notify_running()
    finally:
        first.release()
    third = SingleInstance(name, lock_path=lock_path)
    assert third.claim()
    third.release()


def test_a_crashed_holders_lock_and_socket_are_taken_over(qtbot: Any, tmp_path: Path) -> None:
    name, lock_path = _names(tmp_path)
    os.makedirs(os.path.dirname(lock_path))
    subprocess.run([sys.executable, "-c", _CRASH, name, lock_path], check=True, timeout=60)
    assert os.path.exists(lock_path)
    instance = SingleInstance(name, lock_path=lock_path, notify_patience_s=0.0)
    try:
        assert instance.claim()
        with qtbot.waitSignal(instance.activated, timeout=3000):
            assert SingleInstance(name, lock_path=lock_path).notify_running()
    finally:
        instance.release()


@pytest.mark.slow
def test_two_racing_launches_exactly_one_wins(tmp_path: Path) -> None:
    import time

    name, lock_path = _names(tmp_path)
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    start = str(time.time() + 3.0)  # after both interpreters have imported Qt
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CLAIM, name, lock_path, start],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        results.append(out.strip())
    assert sorted(results) == ["lost", "won"]


def test_an_unusable_lock_path_runs_unguarded(qtbot: Any, tmp_path: Path, caplog: Any) -> None:
    (tmp_path / "not-a-dir").write_text("")
    name = f"r3mes-test-{tmp_path.name}"
    instance = SingleInstance(name, lock_path=str(tmp_path / "not-a-dir" / "desktop.lock"))
    try:
        assert instance.claim()  # a broken data dir must not keep the app from starting
        assert "running unguarded" in caplog.text
        with qtbot.waitSignal(instance.activated, timeout=3000):
            assert SingleInstance(name, lock_path=instance.lock_path).notify_running()
    finally:
        instance.release()
