"""Settings → Resources: ranges from the settings, detected devices, list editors, exact
messages, all-or-nothing apply with the start-at-login entry."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from r3mes_desktop.gui.qt import QtCore, QtWidgets
from r3mes_desktop.gui.widgets.resources_tab import AUTO_DEVICES, DETECTING
from r3mes_desktop.gui.widgets.settings_dialog import SettingsDialog
from r3mes_desktop.support.config import load_settings, paths, updated
from r3mes_desktop.support.secrets import SecretsStore
from tests.helpers.gui_fakes import FakeRuntime


class FakeAutostart:
    def __init__(self, fail: str | None = None) -> None:
        self.calls: list[bool] = []
        self.fail = fail

    @property
    def where(self) -> str:
        return "/tmp/autostart/r3mes-desktop.desktop"

    def is_enabled(self) -> bool:
        return bool(self.calls and self.calls[-1])

    def set_enabled(self, enabled: bool) -> None:
        if self.fail:
            raise OSError(self.fail)
        self.calls.append(enabled)


@pytest.fixture
def runtime(tmp_path: Path) -> FakeRuntime:
    rt = FakeRuntime(tmp_path)
    rt.settings = load_settings()
    return rt


@pytest.fixture
def entry() -> FakeAutostart:
    return FakeAutostart()


def _dialog(qtbot: Any, runtime: FakeRuntime, entry: FakeAutostart, **kw: Any) -> SettingsDialog:
    dlg = SettingsDialog(
        runtime, secrets=SecretsStore(paths().secrets_file), autostart=lambda: entry, **kw
    )
    qtbot.addWidget(dlg)
    dlg.tabs.setCurrentWidget(dlg.resources)
    dlg.show()
    return dlg


@pytest.fixture
def dialog(qtbot: Any, qloop: Any, runtime: FakeRuntime, entry: FakeAutostart) -> SettingsDialog:
    dlg = _dialog(qtbot, runtime, entry)
    qtbot.waitUntil(lambda: not dlg.resources.devices.detecting, timeout=5000)
    return dlg


def _spin(dialog: SettingsDialog, name: str) -> Any:
    widget = dialog.widgets[name]
    assert isinstance(widget, QtWidgets.QSpinBox | QtWidgets.QDoubleSpinBox)
    return widget


def test_spin_boxes_take_range_unit_and_off_from_the_settings_fields(
    dialog: SettingsDialog,
) -> None:
    threads = _spin(dialog, "training_threads")
    assert (threads.minimum(), threads.maximum()) == (0, 256)
    assert threads.text() == "auto"  # 0 = all cores but one
    threads.setValue(4)
    assert threads.text() == "4 threads"
    memory = _spin(dialog, "memory_budget_mb")
    assert (memory.minimum(), memory.maximum(), memory.suffix()) == (0, 1_048_576, " MB")
    assert memory.text() == "off"
    cpu = _spin(dialog, "governor_max_other_cpu")
    assert (cpu.minimum(), cpu.maximum(), cpu.text()) == (1.0, 100.0, "100 %")
    temp = _spin(dialog, "governor_gpu_temp_limit")
    assert (temp.maximum(), temp.suffix(), temp.text()) == (100.0, " °C", "off")
    idle = _spin(dialog, "governor_idle_minutes")
    idle.setValue(3)
    assert idle.text() == "3.0 min"
    power = _spin(dialog, "gpu_power_target_w")
    assert (power.maximum(), power.suffix()) == (1500.0, " W")
    assert not any(isinstance(w, QtWidgets.QLineEdit) for w in _resource_fields(dialog))


def _resource_fields(dialog: SettingsDialog) -> list[QtWidgets.QWidget]:
    return [w for w in dialog.widgets.values() if dialog.resources.isAncestorOf(w)]


def test_a_value_out_of_the_accepted_set_shows_the_validators_message_under_the_field(
    dialog: SettingsDialog,
) -> None:
    _spin(dialog, "memory_budget_mb").setValue(100)
    expected = (
        "memory_budget_mb (R3MES_MEMORY_BUDGET_MB) = 100 is invalid (must be 0 (none) or "
        "at least 256 MB): accepted 0 = no budget, or 256–1048576 MB"
    )
    assert dialog.error_for("memory_budget_mb") == expected
    assert dialog.error_labels["memory_budget_mb"].text() == expected
    assert not dialog.error_labels["memory_budget_mb"].isHidden()
    assert not dialog.apply_button.isEnabled() and dialog.apply() is False
    _spin(dialog, "memory_budget_mb").setValue(512)
    assert dialog.error_labels["memory_budget_mb"].isHidden()
    assert dialog.apply_button.isEnabled()


def test_devices_say_detecting_until_the_runtime_answers_then_list_each_device(
    qtbot: Any, qloop: Any, runtime: FakeRuntime, entry: FakeAutostart
) -> None:
    runtime.settings = updated(runtime.settings, mining_devices=("cuda:1",))
    runtime.detection_gate = asyncio.Event()
    dlg = _dialog(qtbot, runtime, entry)
    devices = dlg.resources.devices
    qtbot.wait(50)
    assert devices.detecting and devices.status.text() == DETECTING
    assert devices.status.isVisible() and devices.boxes == {}
    assert dlg.candidate()["mining_devices"] == ("cuda:1",)  # the saved choice is kept
    runtime.detection_gate.set()
    qtbot.waitUntil(lambda: not devices.detecting, timeout=5000)
    assert not devices.status.isVisible()
    assert [box.text() for box in devices.boxes.values()] == [
        "cpu · Test CPU · 16 GB · 8 cores",
        "cuda:0 · NVIDIA H200 · 140 GB · driver 580.159.04",
        "cuda:1 · NVIDIA H200 · 140 GB · driver 580.159.04",
    ]
    assert [d for d, box in devices.boxes.items() if box.isChecked()] == ["cuda:1"]
    assert devices.notes.text() == (
        "nvidia-ml-py is not installed: no driver version or temperatures"
    )
    assert devices.notes.isVisible()
    assert devices.auto.text() == AUTO_DEVICES


def test_the_cpu_mines_alone_ticking_it_unticks_the_gpus_and_back(
    dialog: SettingsDialog,
) -> None:
    boxes = dialog.resources.devices.boxes
    assert dialog.candidate()["mining_devices"] == ()  # auto
    boxes["cuda:0"].click()
    boxes["cuda:1"].click()
    assert dialog.candidate()["mining_devices"] == ("cuda:0", "cuda:1")
    boxes["cpu"].click()
    assert dialog.candidate()["mining_devices"] == ("cpu",)
    assert not boxes["cuda:0"].isChecked() and not boxes["cuda:1"].isChecked()
    boxes["cuda:1"].click()
    assert dialog.candidate()["mining_devices"] == ("cuda:1",)
    assert dialog.error_for("mining_devices") == "" and dialog.apply()
    assert load_settings().mining_devices == ("cuda:1",)


def test_a_saved_device_that_is_not_found_is_listed_so_it_can_be_unticked(
    qtbot: Any, qloop: Any, runtime: FakeRuntime, entry: FakeAutostart
) -> None:
    runtime.settings = updated(runtime.settings, mining_devices=("cuda:3",))
    dlg = _dialog(qtbot, runtime, entry)
    devices = dlg.resources.devices
    qtbot.waitUntil(lambda: not devices.detecting, timeout=5000)
    assert devices.boxes["cuda:3"].text() == "cuda:3 · not found on this machine"
    assert devices.boxes["cuda:3"].isChecked()
    devices.boxes["cuda:3"].click()
    assert dlg.candidate()["mining_devices"] == ()


def test_a_failed_detection_keeps_the_saved_choice_and_says_why(
    qtbot: Any, qloop: Any, runtime: FakeRuntime, entry: FakeAutostart
) -> None:
    async def broken() -> Any:
        raise RuntimeError("probe crashed")

    runtime.detect_devices = broken  # type: ignore[method-assign]
    runtime.settings = updated(runtime.settings, mining_devices=("cuda:0",))
    dlg = _dialog(qtbot, runtime, entry)
    status = dlg.resources.devices.status
    qtbot.waitUntil(lambda: "probe crashed" in status.text(), timeout=5000)
    assert status.text() == "devices could not be detected: probe crashed"
    assert dlg.candidate()["mining_devices"] == ("cuda:0",)


def test_mining_hours_are_built_from_day_and_times_not_typed(dialog: SettingsDialog) -> None:
    editor = dialog.resources.windows
    editor.day.setCurrentText("sat")
    editor.start.setTime(QtCore.QTime(9, 0))
    editor.end.setTime(QtCore.QTime(17, 30))
    editor.add_button.click()
    editor.day.setCurrentText("sun")
    editor.start.setTime(QtCore.QTime(22, 0))
    editor.end.setTime(QtCore.QTime(6, 0))  # past midnight
    editor.add_button.click()
    editor.add_button.click()  # the same window twice is one window
    assert dialog.candidate()["governor_windows"] == ("sat:09:00-17:30", "sun:22:00-06:00")
    editor.items.item(1).setSelected(True)
    editor.remove_button.click()
    assert dialog.apply()
    assert load_settings().governor_windows == ("sat:09:00-17:30",)


def test_programs_are_added_and_removed_one_at_a_time(dialog: SettingsDialog) -> None:
    editor = dialog.resources.pause_while
    assert editor.empty.isVisible() and not editor.items.isVisible()
    for name in ("steam", "  zoom  ", ""):
        editor.entry.setText(name)
        editor.entry.returnPressed.emit()
    assert dialog.candidate()["governor_pause_while"] == ("steam", "zoom")
    assert editor.items.isVisible() and not editor.empty.isVisible()
    editor.items.item(0).setSelected(True)
    editor.remove_button.click()
    assert dialog.apply()
    assert load_settings().governor_pause_while == ("zoom",)


def test_policies_and_caps_apply_and_reach_the_runtime(
    dialog: SettingsDialog, runtime: FakeRuntime, qtbot: Any
) -> None:
    _spin(dialog, "governor_idle_minutes").setValue(3)
    _spin(dialog, "governor_max_other_cpu").setValue(50)
    _spin(dialog, "governor_gpu_temp_limit").setValue(84)
    _spin(dialog, "training_threads").setValue(6)
    dialog.resources.not_on_battery.setChecked(True)
    dialog.resources.priority.setCurrentText("idle")
    with qtbot.waitSignal(dialog.applied, timeout=2000) as blocker:
        dialog.apply_button.click()
    assert blocker.args[0] == (
        "governor_gpu_temp_limit, governor_idle_minutes, governor_max_other_cpu, "
        "governor_not_on_battery, process_priority, training_threads"
    )  # all live: the caps reach each worker from its next round
    saved = load_settings()
    assert (saved.governor_idle_minutes, saved.governor_max_other_cpu) == (3.0, 50.0)
    assert (saved.governor_gpu_temp_limit, saved.training_threads) == (84.0, 6)
    assert saved.process_priority == "idle" and saved.governor_not_on_battery
    assert runtime.applied[-1] == saved


def test_an_untouched_tab_changes_nothing_even_with_fractional_values(
    qtbot: Any, qloop: Any, runtime: FakeRuntime, entry: FakeAutostart
) -> None:
    runtime.settings = updated(runtime.settings, governor_idle_minutes=0.05)
    dlg = _dialog(qtbot, runtime, entry)
    qtbot.waitUntil(lambda: not dlg.resources.devices.detecting, timeout=5000)
    assert _spin(dlg, "governor_idle_minutes").text() == "0.05 min"
    with qtbot.waitSignal(dlg.applied, timeout=2000) as blocker:
        dlg.apply_button.click()
    assert blocker.args[0] == "no changes"


def test_what_the_runtime_cannot_apply_live_is_said_to_need_a_restart(
    dialog: SettingsDialog, runtime: FakeRuntime, qtbot: Any
) -> None:
    runtime.not_live = ["mining_devices"]
    dialog.resources.devices.boxes["cuda:0"].click()
    with qtbot.waitSignal(dialog.applied, timeout=2000) as blocker:
        dialog.apply_button.click()
    assert blocker.args[0] == "mining_devices — mining_devices apply when the app is restarted"


def test_start_at_login_switches_the_entry_only_when_it_changed(
    dialog: SettingsDialog, entry: FakeAutostart
) -> None:
    assert dialog.apply() and entry.calls == []
    dialog.resources.start_at_login.setChecked(True)
    assert dialog.apply()
    assert entry.calls == [True] and load_settings().start_at_login
    dialog.resources.start_at_login.setChecked(False)
    assert dialog.apply()
    assert entry.calls == [True, False] and not load_settings().start_at_login


def test_a_failed_autostart_entry_saves_nothing_and_says_why_under_the_field(
    qtbot: Any, qloop: Any, runtime: FakeRuntime
) -> None:
    entry = FakeAutostart(fail="/home/u/.config/autostart: permission denied")
    dlg = _dialog(qtbot, runtime, entry)
    before = paths().settings_file.read_bytes() if paths().settings_file.exists() else None
    dlg.resources.start_at_login.setChecked(True)
    assert dlg.apply() is False
    label = dlg.error_labels["start_at_login"]
    assert label.text() == (
        "Start at login could not be set: /home/u/.config/autostart: permission denied"
    )
    assert not label.isHidden()
    after = paths().settings_file.read_bytes() if paths().settings_file.exists() else None
    assert before == after and not runtime.applied


def test_a_failed_settings_write_switches_the_entry_back(
    qtbot: Any, qloop: Any, runtime: FakeRuntime, entry: FakeAutostart
) -> None:
    def broken_save(_settings: Any) -> None:
        raise OSError("disk full")

    dlg = _dialog(qtbot, runtime, entry, save=broken_save)
    dlg.resources.start_at_login.setChecked(True)
    assert dlg.apply() is False
    assert entry.calls == [True, False]
    assert "disk full" in dlg.general_error.text()


def test_a_field_the_environment_sets_is_locked(
    qtbot: Any, qloop: Any, runtime: FakeRuntime, entry: FakeAutostart, monkeypatch: Any
) -> None:
    monkeypatch.setenv("R3MES_POW_THREADS", "2")
    dlg = _dialog(qtbot, runtime, entry)
    spin = _spin(dlg, "pow_threads")
    assert not spin.isEnabled()
    assert "Set by R3MES_POW_THREADS in the environment" in spin.toolTip()


def test_enter_in_the_program_field_adds_the_program_and_does_not_press_ok(
    dialog: SettingsDialog, runtime: FakeRuntime, qtbot: Any
) -> None:
    editor = dialog.resources.pause_while
    editor.entry.setFocus()
    qtbot.keyClicks(editor.entry, "steam")
    qtbot.keyClick(editor.entry, QtCore.Qt.Key.Key_Return)
    assert dialog.candidate()["governor_pause_while"] == ("steam",)
    assert dialog.isVisible() and not runtime.applied


def test_a_program_typed_but_not_added_holds_ok_back_until_added_or_cleared(
    dialog: SettingsDialog,
) -> None:
    editor = dialog.resources.pause_while
    editor.entry.setText("zoom")
    assert dialog.error_for("governor_pause_while") == (
        "“zoom” is not in the list yet: press Add or Enter, or clear it"
    )
    assert not dialog.error_labels["governor_pause_while"].isHidden()
    assert not dialog.ok_button.isEnabled() and dialog.apply() is False
    editor.add_button.click()
    assert dialog.error_for("governor_pause_while") == ""
    assert dialog.candidate()["governor_pause_while"] == ("zoom",)
    editor.entry.setText("steam")
    editor.entry.clear()
    assert dialog.ok_button.isEnabled()
