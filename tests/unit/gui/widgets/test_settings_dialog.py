"""Settings dialog: exact inline messages, all-or-nothing save, secrets, keystore."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from r3mes_desktop.adapters.chain.keystore import Keystore
from r3mes_desktop.gui.widgets.settings_dialog import SettingsDialog
from r3mes_desktop.support.config import load_settings, paths
from r3mes_desktop.support.secrets import SLACK_WEBHOOK_URL, SecretsStore
from tests.helpers.gui_fakes import FakeRuntime


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
    dlg.show()
    return dlg


def test_out_of_range_shows_the_validators_exact_message(dialog: SettingsDialog) -> None:
    dialog.set_field("pow_difficulty", "40")
    expected = "pow_difficulty (R3MES_POW_DIFFICULTY) = 40 is out of range: accepted 16–32"
    assert dialog.error_for("pow_difficulty") == expected
    assert dialog.error_labels["pow_difficulty"].text() == expected
    assert not dialog.error_labels["pow_difficulty"].isHidden()
    assert not dialog.ok_button.isEnabled() and not dialog.apply_button.isEnabled()
    dialog.set_field("pow_difficulty", "24")
    assert dialog.error_for("pow_difficulty") == ""
    assert dialog.error_labels["pow_difficulty"].isHidden()
    assert dialog.apply_button.isEnabled()


def test_cross_field_and_url_messages(dialog: SettingsDialog) -> None:
    dialog.set_field("retry_initial_delay", "10")
    dialog.set_field("retry_max_delay", "5")
    assert "must be ≥ retry_initial_delay = 10" in dialog.error_for("retry_max_delay")
    dialog.devnet_box.setChecked(False)
    dialog.set_field("chain_rpc_urls", "ftp://example.org")
    assert dialog.error_for("chain_rpc_urls").startswith(
        "chain_rpc_urls (R3MES_CHAIN_RPC_URLS) = [ftp://example.org] is invalid"
    )


def test_apply_persists_and_reaches_the_runtime(
    dialog: SettingsDialog, runtime: FakeRuntime, qtbot: Any
) -> None:
    dialog.set_field("max_active_transactions", "4")
    dialog.set_field("notify_min_severity", "error")
    with qtbot.waitSignal(dialog.applied, timeout=2000) as blocker:
        dialog.apply_button.click()
    assert "max_active_transactions" in blocker.args[0]
    assert runtime.settings.max_active_transactions == 4
    reloaded = load_settings()
    assert reloaded.max_active_transactions == 4
    assert reloaded.notify_min_severity == "error"


def test_invalid_candidate_saves_nothing(dialog: SettingsDialog, runtime: FakeRuntime) -> None:
    before = paths().settings_file.read_bytes() if paths().settings_file.exists() else None
    dialog.set_field("max_active_transactions", "4")
    dialog.set_field("smtp_port", "70000")
    assert "smtp_port (R3MES_SMTP_PORT) = 70000 is out of range" in dialog.error_for("smtp_port")
    assert dialog.apply() is False
    after = paths().settings_file.read_bytes() if paths().settings_file.exists() else None
    assert before == after
    assert runtime.settings.max_active_transactions == 10


def test_failed_save_restores_secrets(runtime: FakeRuntime, qtbot: Any, qloop: Any) -> None:
    store = SecretsStore(paths().secrets_file)
    store.set(SLACK_WEBHOOK_URL, "https://hooks.slack.com/services/OLD")

    def broken_save(_settings: Any) -> None:
        raise OSError("disk full")

    dlg = SettingsDialog(runtime, secrets=store, save=broken_save)
    qtbot.addWidget(dlg)
    dlg.slack_url.setText("https://hooks.slack.com/services/NEW")
    assert dlg.apply() is False
    assert "disk full" in dlg.general_error.text()
    assert store.get(SLACK_WEBHOOK_URL) == "https://hooks.slack.com/services/OLD"


def test_slack_url_is_validated_and_never_shown_back(dialog: SettingsDialog) -> None:
    dialog.set_field("slack_enabled", True)
    assert dialog.error_for("slack_webhook_url") == (
        "Slack webhook URL is required when Slack is on"
    )
    dialog.slack_url.setText("http://insecure")
    assert dialog.error_for("slack_webhook_url") == "Slack webhook URL must start with https://"
    dialog.slack_url.setText("https://hooks.slack.com/services/T0/B0/SECRET")
    assert dialog.apply()
    assert dialog.slack_url.text() == ""
    assert dialog.secrets.get(SLACK_WEBHOOK_URL) == "https://hooks.slack.com/services/T0/B0/SECRET"
    assert "SECRET" not in paths().settings_file.read_text()


def test_import_key_writes_keystore_and_clears_the_field(
    dialog: SettingsDialog, runtime: FakeRuntime, qtbot: Any
) -> None:
    tab = dialog.account
    tab.private_key.setText("0x" + "11" * 32)
    tab.password.setText("correct horse")
    tab.confirm.setText("correct horse")
    with qtbot.waitSignal(tab.key_written, timeout=10000) as blocker:
        tab.import_button.click()
    assert tab.private_key.text() == "" and tab.password.text() == ""
    address = blocker.args[0]
    assert runtime.keystore.address() == address  # type: ignore[attr-defined]
    assert tab.address.text() == address
    assert "11" * 32 not in tab.message.text()
    assert not tab.import_button.isEnabled()


def test_password_mismatch_is_reported(dialog: SettingsDialog) -> None:
    tab = dialog.account
    tab.password.setText("a")
    tab.confirm.setText("b")
    tab.create_button.click()
    assert tab.message.text() == "confirm: the two passwords differ"
    assert not tab.keystore.exists()
