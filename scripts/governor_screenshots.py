"""Screenshots of the resource governor in the window: Settings → Resources, and the status
bar while the governor holds mining back, each at 1280×800 and 1920×1080.

    xvfb-run -a -s "-screen 0 1920x1080x24" .venv/bin/python scripts/governor_screenshots.py \
        docs/screenshots

The real app on its embedded devnet (fast rounds) in a temporary home, with the policy
"pause while steam runs". It mines a few rounds, then a program named `steam` starts (a
link to `sleep`: the process list shows its name): the real governor pauses mining within
its half-second period and the status bar and tray say so. The Resources tab lists the
devices this machine really has (detected by the runtime); the mining hours shown are typed
into the editor, not saved.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIZES = ((1280, 800), (1920, 1080))


def _steam(home: Path) -> subprocess.Popen[bytes]:
    """A process the process list names `steam`."""
    link = home / "bin" / "steam"
    link.parent.mkdir(parents=True, exist_ok=True)
    sleep = shutil.which("sleep")
    assert sleep is not None, "no sleep(1) on PATH"
    link.symlink_to(sleep)
    return subprocess.Popen([str(link), "600"])  # noqa: S603 - our own link to sleep(1)


async def _shoot(window: Any, runtime: Any, home: Path, out: Path) -> list[Path]:
    from r3mes_desktop.core.txstate import TxState
    from r3mes_desktop.gui.qt import QtCore, QtWidgets
    from r3mes_desktop.gui.screenshots import until
    from r3mes_desktop.gui.widgets.settings_dialog import SettingsDialog

    written: list[Path] = []
    await runtime.open()
    window.runtime_ready()
    window.window_actions.start.trigger()
    await until(lambda: sum(r.state == TxState.COMMITTED for r in window.tx_model.rows()) >= 3, 300)
    steam = _steam(home)
    try:
        held = window.status.held
        await until(lambda: held.text().startswith("paused:"), 30)
        # paused, or pausing while a round held at its checkpoint waits for the release
        await until(lambda: window.miner_state in ("paused", "pausing"), 60)
        await asyncio.sleep(1.5)  # the batched repaint and the table settle
        for width, height in SIZES:
            window.resize(width, height)
            window.move(0, 0)
            await asyncio.sleep(1)
            path = out / f"governor-held-{width}x{height}.png"
            window.grab().save(str(path))
            written.append(path)
            print(f"{path.name}: status bar says {held.text()!r}")

        dialog = SettingsDialog(runtime, parent=window)
        dialog.tabs.setCurrentWidget(dialog.resources)
        windows = dialog.resources.windows
        for day, start, end in (("sat", (9, 0), (17, 30)), ("sun", (22, 0), (6, 0))):
            windows.day.setCurrentText(day)
            windows.start.setTime(QtCore.QTime(*start))
            windows.end.setTime(QtCore.QTime(*end))
            windows.add_button.click()
        dialog.show()
        await until(lambda: not dialog.resources.devices.detecting, 120)
        screen = QtWidgets.QApplication.primaryScreen()
        for width, height in SIZES:
            window.resize(width, height)
            window.move(0, 0)
            dialog.resize(min(dialog.width(), width - 40), min(dialog.height(), height - 60))
            await asyncio.sleep(0.5)
            frame = dialog.frameGeometry()
            dialog.move(
                max(0, (width - frame.width()) // 2), max(0, (height - frame.height()) // 2)
            )
            await asyncio.sleep(0.8)
            path = out / f"settings-resources-{width}x{height}.png"
            screen.grabWindow(0, 0, 0, width, height).save(str(path))
            written.append(path)
        dialog.close()
    finally:
        steam.kill()
        steam.wait()
    await runtime.miner.stop()
    return written


def main(argv: list[str] | None = None) -> int:
    from r3mes_desktop.gui.screenshots import prepare

    out, home = prepare(argv, "r3mes-governor-screenshots-")

    from r3mes_desktop.app.runtime import RuntimeOptions
    from r3mes_desktop.gui.screenshots import run_window

    options = RuntimeOptions.fast(
        settings_overrides={"pow_difficulty": 16, "governor_pause_while": ("steam",)}
    )
    for path in run_window(options, lambda window, runtime: _shoot(window, runtime, home, out)):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
