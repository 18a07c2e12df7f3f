"""Screenshots of Settings → Network after "Join a network…", at 1280×800 and 1920×1080.

    xvfb-run -a -s "-screen 0 1920x1080x24" .venv/bin/python scripts/network_screenshots.py \
        docs/screenshots

A real network to join: an anvil chain and a js-ipfs daemon from tests/peers (npm), the
contract deployed by `r3mes-operator deploy`, which writes the network file. The app runs on
its embedded devnet in a temporary home (the user's settings and journal are never
touched), mines a little so the window looks as it does in use, then the dialog joins the
network file: fields filled, one line per check (the new key holds no gas yet: a warning).
The whole screen is grabbed, window and dialog together, at each size.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OPERATOR_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"  # anvil's


def _deploy(home: Path, anvil: str, ipfs: str) -> Path:
    key = home / "operator.key"
    key.write_text(OPERATOR_KEY + "\n", encoding="utf-8")
    key.chmod(0o600)
    network = home / "network.json"
    subprocess.run(  # noqa: S603 - our own interpreter and module, arguments we built
        [sys.executable, "-m", "r3mes_desktop.cli.operator", "deploy", "--rpc-url", anvil,
         "--key-file", str(key), "--out", str(network), "--ipfs-api", ipfs,
         "--name", "demo", "--state-dir", str(home / "operator")],
        check=True, timeout=120, capture_output=True,
    )  # fmt: skip
    return network


async def _shoot(window: Any, runtime: Any, network: Path, out: Path) -> list[Path]:
    from r3mes_desktop.core.txstate import TxState
    from r3mes_desktop.gui.qt import QtWidgets
    from r3mes_desktop.gui.screenshots import until
    from r3mes_desktop.gui.widgets.settings_dialog import SettingsDialog

    await runtime.open()
    window.runtime_ready()
    window.window_actions.start.trigger()
    await until(lambda: sum(r.state == TxState.COMMITTED for r in window.tx_model.rows()) >= 2, 300)
    await runtime.miner.pause()  # rounds in flight finish; the table stays as it was
    await asyncio.to_thread(runtime.keystore.create, "a screenshot password")  # no gas yet
    dialog = SettingsDialog(runtime, parent=window)
    dialog.tabs.setCurrentIndex(1)
    dialog.show()
    panel = dialog.join_panel
    panel.source.setText(str(network))
    done: list[str] = []
    panel.finished.connect(done.append)
    panel.join_button.click()
    await until(lambda: bool(done), 60)
    screen = QtWidgets.QApplication.primaryScreen()
    written = []
    for width, height in ((1280, 800), (1920, 1080)):
        window.resize(width, height)
        window.move(0, 0)
        await asyncio.sleep(0.5)
        frame = dialog.frameGeometry()
        dialog.move(max(0, (width - frame.width()) // 2), max(0, (height - frame.height()) // 2))
        await asyncio.sleep(0.8)
        path = out / f"settings-network-join-{width}x{height}.png"
        screen.grabWindow(0, 0, 0, width, height).save(str(path))
        written.append(path)
    dialog.close()
    await runtime.miner.stop()
    return written


def main(argv: list[str] | None = None) -> int:
    from r3mes_desktop.gui.screenshots import prepare

    out, home = prepare(argv, "r3mes-network-screenshots-")

    from bench.chaos.peers import start_anvil, start_jsipfs

    anvil = start_anvil(home / "anvil")
    ipfs = start_jsipfs(home / "jsipfs")
    try:
        network = _deploy(home, anvil.address, ipfs.address)
        print(json.dumps(json.loads(network.read_text()), indent=1))
        written = _run_app(network, out)
    finally:
        ipfs.stop()
        anvil.stop()
    for path in written:
        print(path)
    return 0


def _run_app(network: Path, out: Path) -> list[Path]:
    from r3mes_desktop.app.runtime import RuntimeOptions
    from r3mes_desktop.gui.screenshots import run_window

    return run_window(
        RuntimeOptions.fast(), lambda window, runtime: _shoot(window, runtime, network, out)
    )


if __name__ == "__main__":
    sys.exit(main())
