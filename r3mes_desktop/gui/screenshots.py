"""Render the README's screenshots: the main window while mining (at 1280×800, and once at
1920×1080), and each settings tab.

    make screenshots   # = xvfb-run … python -m r3mes_desktop.gui.screenshots docs/screenshots

Runs the real app on a throwaway devnet (fast rounds) in a temporary data directory, so
the user's own journal and settings are never touched.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


async def until(condition: Any, timeout_s: float) -> None:
    """Wait (on the app's loop) until `condition()` holds; TimeoutError past `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("screenshots: the app did not reach the wanted state in time")
        await asyncio.sleep(0.2)


def prepare(argv: list[str] | None, prefix: str) -> tuple[Path, Path]:
    """The output folder (the first argument, default docs/screenshots; created) and a
    throwaway home the app's data, settings and logs go to, so the user's own are never
    touched."""
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0] if args else "docs/screenshots").resolve()
    out.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ["R3MES_DATA_DIR"] = str(home / "data")
    os.environ["R3MES_CONFIG_DIR"] = str(home / "config")
    os.environ["R3MES_LOG_DIR"] = str(home / "logs")
    os.environ.setdefault("PYTHON_KEYRING_BACKEND", "keyring.backends.null.Keyring")
    return out, home


def run_window(options: Any, shoot: Callable[[Any, Any], Awaitable[list[Path]]]) -> list[Path]:
    """The real window on a runtime with `options`, at 1280×800, on a qasync loop:
    `await shoot(window, runtime)`, then the window's tasks and the runtime are closed
    whatever happened (the screenshot scripts share this)."""
    import qasync

    from r3mes_desktop.app.runtime import Runtime
    from r3mes_desktop.gui.main_window import MainWindow
    from r3mes_desktop.gui.qt import QtWidgets

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(sys.argv[:1])
    app.setApplicationName("R3MES Desktop")
    runtime = Runtime(options=options)
    window = MainWindow(runtime, tray_available=False)
    window.resize(1280, 800)
    window.show()
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)

    async def run() -> list[Path]:
        try:
            return await shoot(window, runtime)
        finally:
            window.shutdown_widgets()
            await window.tasks.cancel_all()
            await runtime.close()

    with loop:
        written: list[Path] = loop.run_until_complete(run())
    return written


class _SwitchableStore:
    """The devnet store with an off switch: `down = True` refuses uploads like a stopped
    IPFS daemon (demo fault injection for the "something is down" screenshot)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.down = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def add_and_pin(self, data: bytes) -> str:
        if self.down:
            raise ConnectionRefusedError(111, "connection refused")
        cid: str = await self.inner.add_and_pin(data)
        return cid


async def _shoot(window: Any, runtime: Any, out: Path) -> list[Path]:
    from r3mes_desktop.core.txstate import TxState
    from r3mes_desktop.gui.widgets.settings_dialog import SettingsDialog

    written: list[Path] = []
    await runtime.open()
    window.runtime_ready()
    window.window_actions.start.trigger()

    def committed() -> int:
        return sum(r.state == TxState.COMMITTED for r in window.tx_model.rows())

    def accepted() -> int:  # the devnet's own validator has spoken
        return sum(r.verdict == "accepted" for r in window.tx_model.rows())

    await until(lambda: committed() >= 3 and window.charts is not None, 300)
    await until(lambda: accepted() >= 2, 300)
    # the devnet's aggregator has published versions: the network chart has a line
    await until(lambda: len(window.chart_data.network) >= 3, 600)
    await asyncio.sleep(4)  # a few more chart points and a transaction in flight
    window.tx_view.selectRow(_row_with_verdict(window))
    await asyncio.sleep(1)
    window.tabs.setCurrentIndex(0)
    window.charts.redraw_if_dirty(everything=True)
    for name, tab in (("main-window", 0), ("main-window-breakers", 1), ("main-window-log", 3)):
        window.tabs.setCurrentIndex(tab)
        await asyncio.sleep(0.3)
        path = out / f"{name}.png"
        window.grab().save(str(path))
        written.append(path)
    window.tabs.setCurrentIndex(0)
    window.resize(1920, 1080)
    await asyncio.sleep(1)
    window.charts.redraw_if_dirty(everything=True)
    await asyncio.sleep(0.3)
    path = out / "main-window-1920x1080.png"
    window.grab().save(str(path))
    written.append(path)
    window.resize(1280, 800)
    await asyncio.sleep(0.5)
    dialog = SettingsDialog(runtime, parent=window)
    dialog.show()
    for index in range(dialog.tabs.count()):
        dialog.tabs.setCurrentIndex(index)
        await asyncio.sleep(0.3)
        label = dialog.tabs.tabText(index).lower()
        path = out / f"settings-{label}.png"
        dialog.grab().save(str(path))
        written.append(path)
    dialog.close()
    runtime.store.down = True  # IPFS goes away: rollbacks, notice, error chart, breaker

    def rolled_back_with_ipfs_open() -> bool:
        ipfs = window.breakers_model.row_of("ipfs")
        rolled = any(r.state == TxState.ROLLED_BACK for r in window.tx_model.rows())
        return rolled and ipfs is not None and ipfs.state == "open"

    await until(rolled_back_with_ipfs_open, 120)
    await asyncio.sleep(2)
    window.charts.redraw_if_dirty(everything=True)
    await asyncio.sleep(0.3)
    path = out / "main-window-ipfs-down.png"
    window.grab().save(str(path))
    written.append(path)
    await runtime.miner.stop()
    return written


def _row_with_verdict(window: Any) -> int:
    """The table row (as sorted on screen) of the newest transaction whose update went
    into a model version, else of the newest with a verdict."""
    from r3mes_desktop.gui.models.transactions_model import TransactionsModel

    proxy = window.tx_proxy
    with_verdict = None
    for row in range(proxy.rowCount()):
        tx_id = proxy.index(row, 0).data(TransactionsModel.ID_ROLE)
        found = window.tx_model.row(tx_id)
        if found is not None and found.aggregated_into is not None:
            return int(row)
        if with_verdict is None and found is not None and found.verdict in FINAL:
            with_verdict = int(row)
    return with_verdict or 0


FINAL = ("accepted", "rejected")


def main(argv: list[str] | None = None) -> int:
    out, _home = prepare(argv, "r3mes-screenshots-")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from r3mes_desktop.app.runtime import RuntimeOptions

    options = RuntimeOptions.fast(
        wrap_store=_SwitchableStore,
        settings_overrides={
            "pow_difficulty": 16,
            "max_retries": 1,
            "retry_initial_delay": 0.5,
            "breaker_failure_threshold": 2,
            # Fast rounds mine about ten blocks a second (each round's submission and
            # completion, the operator's rounds, the validator's verdicts): 50 blocks
            # would be 5 s, less than the devnet validator's recomputation takes.
            "verdict_overdue_blocks": 1000,
        },
    )
    for path in run_window(options, lambda window, runtime: _shoot(window, runtime, out)):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
