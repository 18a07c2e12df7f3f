"""Settings → Resources: which devices mine, how much of the machine they take, and when.

No free-text numbers: every figure is a spin box whose range is the Settings field's own
(`ge`/`le`), with its unit as a suffix and "off"/"auto" shown for the 0 that means so; lists
are edited one item at a time. The dialog owns validation: each editor here is registered
with it like any other field (`register(name, editor, shown)`), so an edit re-validates
the whole candidate and the validator's exact message shows under the field.

Devices are detected, not typed. Detection asks torch in a child process and can take
seconds, so it runs as a task on the app's loop (`runtime.detect_devices()`); until it
answers the list says "detecting devices…" and the saved choice is kept as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, get_args

from r3mes_desktop.core.devices import CPU, DeviceInfo
from r3mes_desktop.core.governor import WEEKDAYS
from r3mes_desktop.gui.bridge import TaskRunner
from r3mes_desktop.gui.ports import RuntimePort
from r3mes_desktop.gui.qt import QtCore, QtGui, QtWidgets, Signal
from r3mes_desktop.support.config.settings import Settings

if TYPE_CHECKING:
    from r3mes_desktop.adapters.governor.devices import Detected

AUTO_DEVICES = "Nothing ticked: auto — every GPU found, else the CPU."
DETECTING = "detecting devices…"
_GREY = "color: #555;"

Register = Callable[[str, QtWidgets.QWidget, QtWidgets.QWidget | None], QtWidgets.QWidget]
"""The dialog's: `register(name, editor, shown)` makes `editor` the field's editor and
returns `shown` (the editor with its hint, or the editor itself when None) with the field's
error label under it."""


def bounds(name: str) -> tuple[float, float]:
    """The field's accepted range from its constraints (`ge`, `le`)."""
    low, high = 0.0, 1e9
    for item in Settings.model_fields[name].metadata:
        if getattr(item, "ge", None) is not None:
            low = float(item.ge)
        if getattr(item, "le", None) is not None:
            high = float(item.le)
    return low, high


def int_spin(name: str, suffix: str, *, special: str = "", step: int = 1) -> QtWidgets.QSpinBox:
    """An integer field: range from the Settings field, `special` shown at the minimum."""
    low, high = bounds(name)
    spin = QtWidgets.QSpinBox()
    spin.setRange(int(low), int(high))
    spin.setSuffix(suffix)
    spin.setSingleStep(step)
    if special:
        spin.setSpecialValueText(special)
    return spin


def float_spin(
    name: str, suffix: str, *, special: str = "", step: float = 1.0, decimals: int = 0
) -> QtWidgets.QDoubleSpinBox:
    """A decimal field: range from the Settings field, `special` shown at the minimum."""
    low, high = bounds(name)
    spin = QtWidgets.QDoubleSpinBox()
    spin.setDecimals(decimals)
    spin.setRange(low, high)
    spin.setSuffix(suffix)
    spin.setSingleStep(step)
    if special:
        spin.setSpecialValueText(special)
    return spin


def set_spin(spin: QtWidgets.QAbstractSpinBox, value: Any) -> None:
    """Show a saved value exactly: a decimal spin box gains the decimals a value needs (up
    to 2), so loading 0.05 minutes does not round it and report a change nobody made."""
    if isinstance(spin, QtWidgets.QDoubleSpinBox):
        number = float(value)
        decimals = spin.decimals()
        while decimals < 2 and round(number, decimals) != number:
            decimals += 1
        spin.setDecimals(decimals)
        spin.setValue(number)
    elif isinstance(spin, QtWidgets.QSpinBox):
        spin.setValue(int(value))


class FieldEditor(QtWidgets.QWidget):
    """A field whose value is not one Qt widget's: `value()`, `set_value()`, `changed`."""

    changed = Signal()

    def value(self) -> tuple[str, ...]:
        raise NotImplementedError

    def set_value(self, value: Sequence[str]) -> None:
        raise NotImplementedError

    def problem(self) -> str:
        """Something typed that the value does not hold yet (shown under the field, and
        OK waits), so nothing typed is silently dropped by OK; empty when none."""
        return ""


class ListEditor(FieldEditor):
    """A list edited one item at a time: the caller's entry widgets and an Add button above,
    the items below with Remove. `make_item()` reads the entry widgets (None: nothing to add)."""

    def __init__(
        self,
        entry: Sequence[QtWidgets.QWidget],
        make_item: Callable[[], str | None],
        *,
        empty: str,
        pending: Callable[[], str] = lambda: "",
        parent: QtWidgets.QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self._make_item = make_item
        self._pending = pending
        self.add_button = QtWidgets.QPushButton("Add")
        self.remove_button = QtWidgets.QPushButton("Remove")
        self.remove_button.setEnabled(False)
        self.items = QtWidgets.QListWidget()
        self.items.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.ExtendedSelection)
        self.empty = QtWidgets.QLabel(empty)
        self.empty.setStyleSheet(_GREY)
        self.add_button.clicked.connect(self.add)
        self.remove_button.clicked.connect(self.remove_selected)
        self.items.itemSelectionChanged.connect(
            lambda: self.remove_button.setEnabled(bool(self.items.selectedItems()))
        )
        row = QtWidgets.QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        for widget in entry:
            row.addWidget(widget)
        row.addWidget(self.add_button)
        row.addStretch(1)
        below = QtWidgets.QHBoxLayout()
        below.setContentsMargins(0, 0, 0, 0)
        below.addWidget(self.items, 1)
        below.addWidget(self.remove_button, 0, QtCore.Qt.AlignmentFlag.AlignTop)
        column = QtWidgets.QVBoxLayout(self)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(2)
        column.addLayout(row)
        column.addWidget(self.empty)
        column.addLayout(below)
        self._sync()

    def value(self) -> tuple[str, ...]:
        return tuple(self.items.item(i).text() for i in range(self.items.count()))

    def set_value(self, value: Sequence[str]) -> None:
        self.items.clear()
        self.items.addItems([str(v) for v in value])
        self._sync()
        self.changed.emit()

    def problem(self) -> str:
        typed = self._pending()
        if not typed:
            return ""
        return f"“{typed}” is not in the list yet: press Add or Enter, or clear it"

    def add(self) -> None:
        item = self._make_item()
        if item is None or item in self.value():
            return
        self.items.addItem(item)
        self._sync()
        self.changed.emit()

    def remove_selected(self) -> None:
        for item in self.items.selectedItems():
            self.items.takeItem(self.items.row(item))
        self._sync()
        self.changed.emit()

    def _sync(self) -> None:
        count = self.items.count()
        self.items.setVisible(count > 0)
        self.remove_button.setVisible(count > 0)
        self.empty.setVisible(count == 0)
        row = max(self.items.sizeHintForRow(0), self.items.fontMetrics().height() + 2)
        shown = min(max(count, 1), 4)  # up to 4 rows, then it scrolls
        self.items.setFixedHeight(shown * row + 2 * self.items.frameWidth() + 2)


class EntryLine(QtWidgets.QLineEdit):
    """A line whose Enter adds its text to the list and stops there: a plain QLineEdit
    passes Enter on to the dialog, which would press OK and close it mid-entry."""

    def keyPressEvent(self, event: QtGui.QKeyEvent) -> None:
        super().keyPressEvent(event)
        if event.key() in (QtCore.Qt.Key.Key_Return, QtCore.Qt.Key.Key_Enter):
            event.accept()


def programs_editor() -> ListEditor:
    """Program names, typed one at a time (Enter adds)."""
    name = EntryLine()
    name.setObjectName("entry-governor_pause_while")
    name.setPlaceholderText("e.g. steam")
    name.setMaxLength(255)
    name.setMinimumWidth(160)

    def make() -> str | None:
        text = name.text().strip()
        name.clear()
        return text or None

    editor = ListEditor(
        [name], make, empty="none: no program pauses mining", pending=lambda: name.text().strip()
    )
    editor.entry = name  # type: ignore[attr-defined]
    name.returnPressed.connect(editor.add)
    name.textChanged.connect(editor.changed)
    return editor


def windows_editor() -> ListEditor:
    """Mining hours: a weekday and two times make one `DAY:HH:MM-HH:MM` window (an end
    before the start runs past midnight)."""
    day = QtWidgets.QComboBox()
    day.setObjectName("entry-window-day")
    day.addItems(list(WEEKDAYS))
    start = QtWidgets.QTimeEdit(QtCore.QTime(9, 0))
    start.setObjectName("entry-window-start")
    end = QtWidgets.QTimeEdit(QtCore.QTime(17, 0))
    end.setObjectName("entry-window-end")
    for edit in (start, end):
        edit.setDisplayFormat("HH:mm")
    to = QtWidgets.QLabel("to")

    def make() -> str:
        return (
            f"{day.currentText()}:{start.time().toString('HH:mm')}-{end.time().toString('HH:mm')}"
        )

    editor = ListEditor([day, start, to, end], make, empty="none: any day, any time")
    editor.day, editor.start, editor.end = day, start, end  # type: ignore[attr-defined]
    return editor


class DeviceList(FieldEditor):
    """One checkbox per detected device; nothing ticked = auto. The CPU mines alone (the
    settings refuse it with GPUs): ticking it unticks the GPUs, ticking a GPU unticks it.

    Until detection answers, the saved choice is the value, untouched; a saved device that
    is not found is still listed (ticked, "not found") so the user can untick it.
    """

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self._chosen: tuple[str, ...] = ()
        self._detected: tuple[DeviceInfo, ...] | None = None
        self.boxes: dict[str, QtWidgets.QCheckBox] = {}
        self.status = QtWidgets.QLabel(DETECTING)
        self.status.setObjectName("devices-status")
        self.status.setWordWrap(True)
        self.status.setStyleSheet(_GREY)
        self.auto = QtWidgets.QLabel(AUTO_DEVICES)
        self.auto.setObjectName("devices-auto")
        self.auto.setWordWrap(True)
        self.auto.setStyleSheet(_GREY)
        self.notes = QtWidgets.QLabel()
        self.notes.setObjectName("devices-notes")
        self.notes.setWordWrap(True)
        self.notes.setStyleSheet("color: #b26a00;")
        self.notes.hide()
        self._list = QtWidgets.QVBoxLayout()
        self._list.setContentsMargins(0, 0, 0, 0)
        self._list.setSpacing(2)
        column = QtWidgets.QVBoxLayout(self)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(2)
        column.addWidget(self.status)
        column.addLayout(self._list)
        column.addWidget(self.auto)
        column.addWidget(self.notes)

    @property
    def detecting(self) -> bool:
        return self._detected is None

    def value(self) -> tuple[str, ...]:
        if self._detected is None:
            return self._chosen
        return tuple(device for device, box in self.boxes.items() if box.isChecked())

    def set_value(self, value: Sequence[str]) -> None:
        self._chosen = tuple(value)
        if self._detected is not None:
            self._rebuild()
        self.changed.emit()

    def set_detected(self, detected: Detected) -> None:
        self._chosen = self.value()  # what the user sees now, not the choice at load
        self._detected = tuple(detected.devices)
        self.status.hide()
        self.notes.setText("\n".join(detected.notes))
        self.notes.setVisible(bool(detected.notes))
        self._rebuild()
        self.changed.emit()

    def detection_failed(self, message: str) -> None:
        """The saved choice stays the value; the user sees why there is no list."""
        self.status.setText(f"devices could not be detected: {message}")
        self.status.setStyleSheet("color: #c62828;")

    def _rebuild(self) -> None:
        while (item := self._list.takeAt(0)) is not None:
            if (widget := item.widget()) is not None:
                widget.deleteLater()
        self.boxes = {}
        found = {device.id: device for device in self._detected or ()}
        for device in found.values():
            self._add_box(device.id, device.describe())
        for device_id in self._chosen:
            if device_id not in found:
                self._add_box(device_id, f"{device_id} · not found on this machine")
        for device_id in self._chosen:
            self.boxes[device_id].setChecked(True)
        self._sync_auto()

    def _add_box(self, device_id: str, text: str) -> None:
        box = QtWidgets.QCheckBox(text)
        box.setObjectName(f"device-{device_id}")
        box.setToolTip(f"mine on {device_id}")
        box.toggled.connect(lambda on, d=device_id: self._toggled(d, on))
        self.boxes[device_id] = box
        self._list.addWidget(box)

    def _toggled(self, device_id: str, on: bool) -> None:
        if on:  # the CPU mines alone: keep the choice valid as the user clicks
            for other, box in self.boxes.items():
                if other != device_id and (device_id == CPU or other == CPU):
                    box.blockSignals(True)
                    box.setChecked(False)
                    box.blockSignals(False)
        self._sync_auto()
        self.changed.emit()

    def _sync_auto(self) -> None:
        self.auto.setStyleSheet(_GREY if self.value() else "color: #1565c0; font-weight: bold;")


class ResourcesTab(QtWidgets.QScrollArea):
    """The tab: Devices, Caps, When to mine, Start at login. `register` is the dialog's."""

    def __init__(
        self, runtime: RuntimePort, register: Register, parent: QtWidgets.QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.setObjectName("resources-tab")
        self.setWidgetResizable(True)
        self.setFrameShape(QtWidgets.QFrame.Shape.NoFrame)
        self.runtime = runtime
        page = QtWidgets.QWidget()
        grid = QtWidgets.QGridLayout(page)

        self.devices = DeviceList()
        self.tasks = TaskRunner(self)
        self.tasks.failed.connect(lambda _name, message: self.devices.detection_failed(message))
        devices = self._group(grid, "Devices", 0, 0, 2)
        devices.addRow(register("mining_devices", self.devices, None))

        caps = self._group(grid, "Caps", 1, 0)
        self.spins: dict[str, QtWidgets.QAbstractSpinBox] = {
            "training_threads": int_spin("training_threads", " threads", special="auto"),
            "pow_threads": int_spin("pow_threads", " processes", special="auto"),
            "memory_budget_mb": int_spin("memory_budget_mb", " MB", special="off", step=256),
            "gpu_vram_cap_mb": int_spin("gpu_vram_cap_mb", " MB", special="off", step=256),
            "gpu_power_target_w": float_spin("gpu_power_target_w", " W", special="off", step=10),
            "governor_gpu_temp_limit": float_spin("governor_gpu_temp_limit", " °C", special="off"),
            "governor_gpu_temp_delta": float_spin("governor_gpu_temp_delta", " °C"),
            "governor_idle_minutes": float_spin(
                "governor_idle_minutes", " min", special="off", decimals=1
            ),
            "governor_battery_floor": float_spin("governor_battery_floor", " %", special="off"),
            "governor_max_other_cpu": float_spin("governor_max_other_cpu", " %", step=5),
        }
        self.priority = QtWidgets.QComboBox()
        self.priority.addItems(
            [str(v) for v in get_args(Settings.model_fields["process_priority"].annotation)]
        )
        rows: list[tuple[str, str, QtWidgets.QWidget, str]] = [
            ("Training threads", "training_threads", self.spins["training_threads"],
             "auto = all cores but one"),
            ("Proof-of-work processes", "pow_threads", self.spins["pow_threads"],
             "auto = every core on a CPU rig, the cores GPUs leave"),
            ("Process priority", "process_priority", self.priority,
             "low or idle: other programs come first"),
            ("Memory budget", "memory_budget_mb", self.spins["memory_budget_mb"],
             "off, or at least 256 MB"),
            ("GPU memory cap", "gpu_vram_cap_mb", self.spins["gpu_vram_cap_mb"],
             "per GPU; off, or at least 256 MB"),
            ("GPU power target", "gpu_power_target_w", self.spins["gpu_power_target_w"],
             "per GPU; off, or 30–1500 W"),
            ("GPU temperature limit", "governor_gpu_temp_limit",
             self.spins["governor_gpu_temp_limit"], "pause at the limit; off, or 40–100 °C"),
            ("Resume below the limit by", "governor_gpu_temp_delta",
             self.spins["governor_gpu_temp_delta"], "resume at limit − this"),
        ]  # fmt: skip
        for label, name, widget, hint in rows:
            caps.addRow(label, register(name, widget, self._hinted(widget, hint)))

        when = self._group(grid, "When to mine", 1, 1)
        self.not_on_battery = QtWidgets.QCheckBox("Not on battery")
        self.pause_while = programs_editor()
        self.windows = windows_editor()
        rows = [
            ("Only when idle for", "governor_idle_minutes",
             self.spins["governor_idle_minutes"], "no keyboard or mouse input; off = always"),
            ("", "governor_not_on_battery", self.not_on_battery, "pause when unplugged"),
            ("Battery floor", "governor_battery_floor", self.spins["governor_battery_floor"],
             "on battery, pause below this"),
            ("Other programs' CPU", "governor_max_other_cpu",
             self.spins["governor_max_other_cpu"], "pause above this; 100 % = no limit"),
            ("Pause while running", "governor_pause_while", self.pause_while, ""),
            ("Mining hours", "governor_windows", self.windows, ""),
        ]  # fmt: skip
        for label, name, widget, hint in rows:
            shown = self._hinted(widget, hint) if hint else None
            when.addRow(label, register(name, widget, shown))

        login = self._group(grid, "Start", 2, 0, 2)
        self.start_at_login = QtWidgets.QCheckBox("Start at login, minimised to the tray")
        login.addRow(register("start_at_login", self.start_at_login, None))
        grid.setRowStretch(3, 1)
        grid.setColumnStretch(0, 1)
        grid.setColumnStretch(1, 1)
        self.setWidget(page)

    @staticmethod
    def _group(
        grid: QtWidgets.QGridLayout, title: str, row: int, column: int, span: int = 1
    ) -> QtWidgets.QFormLayout:
        """Devices and Start span the tab; Caps and When to mine sit side by side, so the
        tab fits a 1280×800 screen without scrolling."""
        group = QtWidgets.QGroupBox(title)
        group.setObjectName(f"resources-{title.lower().replace(' ', '-')}")
        form = QtWidgets.QFormLayout(group)
        form.setFieldGrowthPolicy(QtWidgets.QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        grid.addWidget(group, row, column, 1, span, QtCore.Qt.AlignmentFlag.AlignTop)
        return form

    @staticmethod
    def _hinted(widget: QtWidgets.QWidget, hint: str) -> QtWidgets.QWidget:
        """The editor (spin boxes and combos one width, so the figures line up), its hint
        beside it in grey."""
        box = QtWidgets.QWidget()
        row = QtWidgets.QHBoxLayout(box)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(widget)
        if isinstance(widget, QtWidgets.QAbstractSpinBox | QtWidgets.QComboBox):
            widget.setFixedWidth(110)  # one column of figures, whatever the suffix
        label = QtWidgets.QLabel(hint)
        label.setStyleSheet(_GREY)
        label.setWordWrap(True)
        row.addWidget(label, 1)
        box.setFocusProxy(widget)
        return box

    def detect(self) -> None:
        """Ask the runtime which devices there are (a task: detection takes seconds)."""

        self.tasks.spawn(
            self.runtime.detect_devices(), name="Detect devices", on_done=self.devices.set_detected
        )
