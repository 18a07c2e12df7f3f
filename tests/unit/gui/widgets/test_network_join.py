"""Settings → Network: "Join a network…" fills and checks the fields, "Check connection"
runs the pre-flight off the click (the loop keeps running), and the status bar shows the
miner's connected / waiting line. Fake nodes and daemons run on a thread of their own."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from r3mes_desktop.adapters.chain.keystore import Keystore
from r3mes_desktop.core.events import Notice
from r3mes_desktop.gui.qt import QtWidgets
from r3mes_desktop.gui.widgets.settings_dialog import SettingsDialog
from r3mes_desktop.gui.widgets.status_bar import StatusBarController
from r3mes_desktop.support.config import load_settings, paths
from r3mes_desktop.support.secrets import SecretsStore
from tests.helpers.gui_fakes import FakeRuntime
from tests.helpers.service_fakes import (
    hanging_server,
    ipfs_daemon,
    preflight_node,
    served_in_thread,
)
from tests.integration.conftest import free_port

CONTRACT = "0x" + "ab" * 20


@pytest.fixture
def runtime(tmp_path: Path) -> FakeRuntime:
    rt = FakeRuntime(tmp_path)
    rt.settings = load_settings()
    rt.keystore = Keystore(tmp_path / "keys", scrypt_n=2**4)
    return rt


@pytest.fixture
def dialog(qtbot: Any, qloop: Any, runtime: FakeRuntime) -> SettingsDialog:
    dlg = SettingsDialog(runtime, secrets=SecretsStore(paths().secrets_file))
    qtbot.addWidget(dlg)
    dlg.join_panel.timeout_s = 1.0
    dlg.tabs.setCurrentIndex(1)
    dlg.show()
    return dlg


@pytest.fixture
def network(tmp_path: Path) -> Iterator[tuple[Path, str, str]]:
    with served_in_thread(preflight_node(block_time=time.time()), ipfs_daemon()) as (node, ipfs):
        path = tmp_path / "network.json"
        data = {
            "name": "testnet",
            "chain_id": 1337,
            "rpc_urls": [node.url],
            "contract_address": CONTRACT,
            "contract_version": "r3mes-rounds/2",
            "ipfs_api": ipfs.url,
        }
        path.write_text(json.dumps(data), encoding="utf-8")
        yield path, node.url, ipfs.url


def _text(dialog: SettingsDialog, name: str) -> str:
    widget = dialog.widgets[name]
    assert isinstance(widget, QtWidgets.QLineEdit)
    return widget.text()


def test_join_fills_and_checks_the_fields_and_apply_saves_them(
    dialog: SettingsDialog, network: Any, qtbot: Any
) -> None:
    path, rpc, ipfs = network
    panel = dialog.join_panel
    assert dialog.devnet_box.isChecked()
    panel.source.setText(str(path))
    with qtbot.waitSignal(panel.finished, timeout=10_000) as done:
        panel.join_button.click()
    assert done.args[0].startswith("Network testnet (chain 1337) filled in and checked")
    assert not dialog.devnet_box.isChecked()
    assert _text(dialog, "chain_rpc_urls") == rpc
    assert _text(dialog, "chain_id") == "1337"
    assert _text(dialog, "contract_address") == CONTRACT
    assert _text(dialog, "ipfs_api_address") == ipfs
    assert _text(dialog, "network_name") == "testnet"
    names = [c.name for c in panel.checks]
    assert names == ["rpc", "chain_id", "contract", "ipfs", "balance", "clock"]
    assert {c.status for c in panel.checks} <= {"passed", "skipped"}  # no key: balance skipped
    assert "RPC " in panel.results.text() and "is r3mes-rounds/2" in panel.results.text()
    assert not panel.results.isHidden()
    assert load_settings().chain_rpc_urls == ()  # nothing saved before OK/Apply

    with qtbot.waitSignal(dialog.applied, timeout=2000) as applied:
        dialog.apply_button.click()
    assert "network_name" in applied.args[0]
    saved = load_settings()
    assert saved.chain_rpc_urls == (rpc,)
    assert (saved.chain_id, saved.contract_address, saved.network_name) == (
        1337,
        CONTRACT,
        "testnet",
    )


def test_a_bad_network_file_names_the_field_and_changes_nothing(
    dialog: SettingsDialog, tmp_path: Path, qtbot: Any
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"name": "x", "chain_id": 1, "rpc_urls": ["http://a"]}))
    panel = dialog.join_panel
    panel.source.setText(str(path))
    with qtbot.waitSignal(panel.finished, timeout=5000) as done:
        panel.join_button.click()
    assert done.args[0] == "Not joined: network file: contract_address: required"
    assert dialog.devnet_box.isChecked()
    assert _text(dialog, "chain_rpc_urls") == ""
    assert panel.results.isHidden()


def test_check_connection_runs_off_the_click_and_reports_each_check(
    dialog: SettingsDialog, qtbot: Any
) -> None:
    """A hung node: the click returns at once, the buttons wait, a timer on the loop keeps
    firing while the checks time out, then one line per check says what happened."""
    release = threading.Event()
    with served_in_thread(hanging_server(release)) as (node,):
        dialog.devnet_box.setChecked(False)
        dialog.set_field("chain_rpc_urls", node.url)
        dialog.set_field("contract_address", CONTRACT)
        dialog.set_field("ipfs_api_address", f"/ip4/127.0.0.1/tcp/{free_port()}")
        panel = dialog.join_panel
        ticks: list[float] = []
        timer = _ticker(ticks)
        try:
            started = time.monotonic()
            panel.check_button.click()
            assert time.monotonic() - started < 0.5
            assert not panel.check_button.isEnabled()
            assert panel.headline.text() == "Checking the connection…"
            with qtbot.waitSignal(panel.finished, timeout=10_000) as done:
                pass
        finally:
            timer.stop()
            release.set()
    assert done.args[0] == "Not ready: a required check failed."
    assert panel.check_button.isEnabled()
    assert len(ticks) >= 5  # the loop ran all along (a 50 ms timer, a 1 s timeout)
    lines = panel.results.text().split("<br>")
    assert len(lines) == 6
    assert f"RPC: cannot reach {node.url} (no answer within 1 s)" in lines[0]


def _ticker(ticks: list[float]) -> Any:
    from r3mes_desktop.gui.qt import QtCore

    timer = QtCore.QTimer()
    timer.setInterval(50)
    timer.timeout.connect(lambda: ticks.append(time.monotonic()))
    timer.start()
    return timer


def test_check_on_the_devnet_and_with_a_bad_field(dialog: SettingsDialog, qtbot: Any) -> None:
    panel = dialog.join_panel
    with qtbot.waitSignal(panel.finished, timeout=5000) as done:
        panel.check_button.click()
    assert done.args[0] == "The embedded devnet needs no connection."
    dialog.devnet_box.setChecked(False)
    dialog.set_field("chain_rpc_urls", "ftp://nowhere")
    with qtbot.waitSignal(panel.finished, timeout=5000) as done:
        panel.check_button.click()
    assert done.args[0].startswith(
        "Fix the Network fields first: chain_rpc_urls (R3MES_CHAIN_RPC_URLS) = [ftp://nowhere]"
    )


def test_the_status_bar_shows_the_miners_rounds_line(qtbot: Any) -> None:
    bar = QtWidgets.QStatusBar()
    qtbot.addWidget(bar)
    status = StatusBarController(bar, {})
    assert status.rounds.isHidden()
    connected = "connected to testnet (chain 1337), contract 0xabab…abab, 2 open rounds for you"
    status.on_notice(Notice(level="info", message=connected, source="network"))
    assert status.rounds.text() == "Rounds: 2 open"
    assert status.rounds.toolTip() == "C" + connected[1:]
    assert not status.rounds.isHidden()
    waiting = "waiting for rounds: none open for you on testnet (chain 1337), contract 0xab…"
    status.on_notice(Notice(level="info", message=waiting, source="network"))
    assert status.rounds.text() == "Rounds: waiting"
    status.on_notice(Notice(level="warning", message="round 3: skipped", source="miner"))
    assert status.rounds.text() == "Rounds: waiting"  # a skip is an alert, not this label
