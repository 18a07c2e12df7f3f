"""Settings dialog: Account, Network, Limits, Resources, Notifications.

Network also joins a network from its file or URL and checks the connection
(`widgets.network_join`): joining fills the Network fields, which OK/Apply saves like any
other edit.

Every edit re-validates the whole candidate with `config.validate_candidate`, so each field
shows the validator's exact message (field, env var, value, accepted range) under it, and
OK/Apply stay disabled while anything is wrong. Apply is all-or-nothing: secrets and the
settings file are written only after everything validated, a failed write restores the old
secrets, and the runtime is told afterwards so values that can change live do.

Resources (`widgets.resources_tab`) edits figures in spin boxes and lists item by item;
its editors are registered here like the line edits of the other tabs, so they validate
and save the same way. Start at login is the platform's autostart entry
(`support.autostart`): it is switched before the settings file is written and switched
back if that write fails, so the file and the entry never disagree.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

from r3mes_desktop.gui.ports import RuntimePort
from r3mes_desktop.gui.qt import QtWidgets, Signal
from r3mes_desktop.gui.widgets.resources_tab import FieldEditor, set_spin
from r3mes_desktop.support.config import (
    Settings,
    SettingsError,
    accepted,
    env_overrides,
    save_settings,
    updated,
    validate_candidate,
)
from r3mes_desktop.support.secrets import SLACK_WEBHOOK_URL, SMTP_PASSWORD, SecretsStore

if TYPE_CHECKING:
    from r3mes_desktop.app.preflight import Target
    from r3mes_desktop.gui.widgets.resources_tab import ResourcesTab
    from r3mes_desktop.support.autostart import Autostart

log = logging.getLogger(__name__)

Kind = Literal["text", "bool", "choice"]


@dataclass(frozen=True)
class FieldSpec:
    name: str
    label: str
    kind: Kind = "text"
    hint: str = ""


NETWORK = (
    FieldSpec("chain_rpc_urls", "Chain RPC URLs", hint="comma-separated; first is primary"),
    FieldSpec("chain_id", "Chain ID"),
    FieldSpec("ipfs_api_address", "IPFS API"),
    FieldSpec("contract_address", "Contract address"),
    FieldSpec("network_name", "Network name", hint="the joined network's name"),
)
NETWORK_FIELDS = tuple(spec.name for spec in NETWORK)
LIMITS = (
    FieldSpec("max_gradient_size_mb", "Max gradient size (MB)"),
    FieldSpec("max_active_transactions", "Max active transactions"),
    FieldSpec("transaction_timeout", "Transaction timeout (s)"),
    FieldSpec("stale_threshold", "Stale after (s)"),
    FieldSpec("max_retries", "Retries"),
    FieldSpec("retry_initial_delay", "Backoff initial (s)"),
    FieldSpec("retry_max_delay", "Backoff max (s)"),
    FieldSpec("retry_backoff_factor", "Backoff factor"),
    FieldSpec("pow_difficulty", "PoW difficulty (bits)"),
    FieldSpec("model_preset", "Model size", "choice"),
)
NOTIFICATIONS = (
    FieldSpec("notify_tray", "Tray notifications", "bool"),
    FieldSpec("notify_min_severity", "Minimum severity", "choice"),
    FieldSpec("verdict_overdue_blocks", "No verdict after (blocks)"),
    FieldSpec("slack_enabled", "Slack", "bool"),
    FieldSpec("email_enabled", "E-mail", "bool"),
    FieldSpec("smtp_host", "SMTP host"),
    FieldSpec("smtp_port", "SMTP port"),
    FieldSpec("smtp_starttls", "STARTTLS", "bool"),
    FieldSpec("smtp_username", "SMTP user"),
    FieldSpec("email_from", "From"),
    FieldSpec("email_to", "To", hint="comma-separated"),
)
RESTART_FIELDS = frozenset(
    {
        "chain_rpc_urls",
        "chain_id",
        "ipfs_api_address",
        "contract_address",
        "network_name",
        "model_preset",
    }
)
"""Changing these needs a restart of the mining runtime; so do those the runtime's
`apply_settings` returns (what it could not apply live). Devices, governor policies, the
power target and start at login apply at once; the other caps from each worker's next
round."""


def _text_of(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, tuple | list):
        return ", ".join(str(v) for v in value)
    return str(value)


def _choices(name: str) -> list[str]:
    return [str(v) for v in get_args(Settings.model_fields[name].annotation)]


def _system_autostart() -> Autostart:
    from r3mes_desktop.support.autostart import autostart

    return autostart()


def read_field(widget: QtWidgets.QWidget) -> Any:
    """A field editor's value as the validator takes it."""
    if isinstance(widget, QtWidgets.QCheckBox):
        return widget.isChecked()
    if isinstance(widget, QtWidgets.QComboBox):
        return widget.currentText()
    if isinstance(widget, QtWidgets.QLineEdit):
        return widget.text().strip()
    if isinstance(widget, QtWidgets.QSpinBox | QtWidgets.QDoubleSpinBox):
        return widget.value()
    if isinstance(widget, FieldEditor):
        return widget.value()
    raise TypeError(f"not a field editor: {type(widget).__name__}")


def write_field(widget: QtWidgets.QWidget, value: Any) -> None:
    """Show `value` in a field editor, as typing or clicking would."""
    if isinstance(widget, QtWidgets.QCheckBox):
        widget.setChecked(bool(value))
    elif isinstance(widget, QtWidgets.QComboBox):
        widget.setCurrentText(str(value))
    elif isinstance(widget, QtWidgets.QLineEdit):
        widget.setText(_text_of(value))
    elif isinstance(widget, QtWidgets.QSpinBox | QtWidgets.QDoubleSpinBox):
        set_spin(widget, value)
    elif isinstance(widget, FieldEditor):
        widget.set_value(tuple(value) if isinstance(value, tuple | list) else (str(value),))


class SettingsDialog(QtWidgets.QDialog):
    applied = Signal(str)  # a sentence saying what changed

    def __init__(
        self,
        runtime: RuntimePort,
        *,
        parent: QtWidgets.QWidget | None = None,
        secrets: SecretsStore | None = None,
        save: Callable[[Settings], Any] = save_settings,
        autostart: Callable[[], Autostart] = _system_autostart,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings — R3MES Desktop")
        self.setObjectName("settings-dialog")
        if runtime.settings is None:
            raise RuntimeError("settings: the runtime has not loaded them yet")
        self.runtime = runtime
        self.settings: Settings = runtime.settings
        self.secrets = secrets if secrets is not None else SecretsStore()
        self._save = save
        self._autostart = autostart
        self.widgets: dict[str, QtWidgets.QWidget] = {}
        self.error_labels: dict[str, QtWidgets.QLabel] = {}
        self.errors: dict[str, str] = {}
        self._loading = False  # while the form is filled in: no validation per field
        self._locked = env_overrides()

        self.tabs = QtWidgets.QTabWidget()
        self.tabs.setObjectName("settings-tabs")
        self.tabs.addTab(self._account_tab(), "Account")
        self.tabs.addTab(self._network_tab(), "Network")
        self.tabs.addTab(self._form(LIMITS), "Limits")
        self.tabs.addTab(self._resources_tab(), "Resources")
        self.tabs.addTab(self._notifications_tab(), "Notifications")
        self.general_error = QtWidgets.QLabel()
        self.general_error.setObjectName("settings-general-error")
        self.general_error.setWordWrap(True)
        self.general_error.setStyleSheet("color: #c62828;")
        self.general_error.hide()
        buttons = QtWidgets.QDialogButtonBox.StandardButton
        self.buttons = QtWidgets.QDialogButtonBox(buttons.Ok | buttons.Apply | buttons.Cancel)
        self.ok_button = self.buttons.button(buttons.Ok)
        self.apply_button = self.buttons.button(buttons.Apply)
        self.cancel_button = self.buttons.button(buttons.Cancel)
        self.ok_button.clicked.connect(self._ok)
        self.apply_button.clicked.connect(self.apply)
        self.cancel_button.clicked.connect(self.reject)
        layout = QtWidgets.QVBoxLayout(self)
        layout.addWidget(self.tabs)
        layout.addWidget(self.general_error)
        layout.addWidget(self.buttons)
        self.resize(920, 660)  # Resources: two columns without scrolling
        self.load(self.settings)
        self.resources.detect()

    # -- building ------------------------------------------------------------------------
    def _account_tab(self) -> QtWidgets.QWidget:
        from r3mes_desktop.gui.widgets.account_tab import AccountTab

        self.account = AccountTab(self.runtime)
        return self.account

    def _resources_tab(self) -> QtWidgets.QWidget:
        from r3mes_desktop.gui.widgets.resources_tab import ResourcesTab

        self.resources: ResourcesTab = ResourcesTab(self.runtime, self._register)
        return self.resources

    def _network_tab(self) -> QtWidgets.QWidget:
        page = self._form(NETWORK)
        self.devnet_box = QtWidgets.QCheckBox("Use the embedded devnet (no endpoints needed)")
        self.devnet_box.setObjectName("field-devnet")
        self.devnet_box.toggled.connect(self._devnet_toggled)
        form = page.layout()
        assert isinstance(form, QtWidgets.QFormLayout)
        form.insertRow(0, "", self.devnet_box)
        note = QtWidgets.QLabel("Network changes apply when the app is restarted.")
        note.setStyleSheet("color: #555;")
        form.addRow("", note)
        from r3mes_desktop.gui.widgets.network_join import NetworkJoinPanel

        self.join_panel = NetworkJoinPanel(
            keystore=self.account.keystore, fill=self.fill_network, target=self.network_target
        )
        form.addRow(self.join_panel)
        return page

    def fill_network(self, values: Mapping[str, Any]) -> None:
        """Put a joined network's settings into the Network fields (not saved yet); a field
        the environment sets stays as it is, and says so in its tooltip."""
        self.devnet_box.setChecked(False)
        for name, value in values.items():
            if name in self.widgets and name not in self._locked:
                self.set_field(name, _text_of(value))
        self.revalidate()

    def network_target(self) -> Target | str | None:
        """What "Check connection" checks: the Network fields as they are now; None for
        the devnet; or which field to fix first."""
        from r3mes_desktop.app.preflight import Target

        if self.devnet_box.isChecked():
            return None
        values = self.candidate()
        errors = validate_candidate(values)
        for name in NETWORK_FIELDS:
            if name in errors:
                return f"Fix the Network fields first: {errors[name]}"
        try:
            settings = updated(self.settings, **{k: values[k] for k in NETWORK_FIELDS})
        except SettingsError as exc:
            return f"Fix the Network fields first: {exc}"
        return Target.from_settings(settings, account=None)

    def _notifications_tab(self) -> QtWidgets.QWidget:
        page = self._form(NOTIFICATIONS)
        form = page.layout()
        assert isinstance(form, QtWidgets.QFormLayout)
        self.slack_url = self._secret_edit(SLACK_WEBHOOK_URL, "https://hooks.slack.com/…")
        self.smtp_password = self._secret_edit(SMTP_PASSWORD, "SMTP password")
        self.slack_error = self._error_label("slack_webhook_url")
        form.insertRow(3, "Slack webhook URL", self._with_error(self.slack_url, self.slack_error))
        form.insertRow(9, "SMTP password", self.smtp_password)
        return page

    def _secret_edit(self, name: str, placeholder: str) -> QtWidgets.QLineEdit:
        edit = QtWidgets.QLineEdit()
        edit.setObjectName(f"secret-{name}")
        edit.setEchoMode(QtWidgets.QLineEdit.EchoMode.Password)
        stored = self.secrets.get(name)
        edit.setPlaceholderText(
            "saved — type to replace"
            if stored
            else f"{placeholder} (kept in the secrets store, never shown again)"
        )
        edit.textChanged.connect(self.revalidate)
        return edit

    def _error_label(self, name: str) -> QtWidgets.QLabel:
        label = QtWidgets.QLabel()
        label.setObjectName(f"error-{name}")
        label.setWordWrap(True)
        label.setStyleSheet("color: #c62828;")
        label.hide()
        self.error_labels[name] = label
        return label

    def _with_error(self, widget: QtWidgets.QWidget, error: QtWidgets.QLabel) -> QtWidgets.QWidget:
        box = QtWidgets.QWidget()
        column = QtWidgets.QVBoxLayout(box)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(1)
        column.addWidget(widget)
        column.addWidget(error)
        return box

    def _form(self, specs: tuple[FieldSpec, ...]) -> QtWidgets.QWidget:
        page = QtWidgets.QWidget()
        form = QtWidgets.QFormLayout(page)
        form.setFieldGrowthPolicy(QtWidgets.QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        for spec in specs:
            widget = self._make_widget(spec)
            form.addRow(spec.label, self._with_error(widget, self._error_label(spec.name)))
        return page

    def _make_widget(self, spec: FieldSpec) -> QtWidgets.QWidget:
        widget: QtWidgets.QWidget
        if spec.kind == "bool":
            widget = QtWidgets.QCheckBox()
        elif spec.kind == "choice":
            combo = QtWidgets.QComboBox()
            combo.addItems(_choices(spec.name))
            widget = combo
        else:
            edit = QtWidgets.QLineEdit()
            edit.setPlaceholderText(spec.hint or accepted(spec.name))
            widget = edit
        self._adopt(spec.name, widget)
        return widget

    def _adopt(self, name: str, widget: QtWidgets.QWidget) -> None:
        """Make `widget` the editor of field `name`: every edit re-validates; a field the
        environment sets is locked and says so."""
        if isinstance(widget, QtWidgets.QCheckBox):
            widget.toggled.connect(self.revalidate)
        elif isinstance(widget, QtWidgets.QComboBox):
            widget.currentTextChanged.connect(self.revalidate)
        elif isinstance(widget, QtWidgets.QLineEdit):
            widget.textChanged.connect(self.revalidate)
        elif isinstance(widget, QtWidgets.QSpinBox | QtWidgets.QDoubleSpinBox):
            widget.valueChanged.connect(self.revalidate)
        elif isinstance(widget, FieldEditor):
            widget.changed.connect(self.revalidate)
        tip = f"{name} — accepted: {accepted(name)}"
        if name in self._locked:
            widget.setEnabled(False)
            tip += f"\nSet by {self._locked[name]} in the environment"
        widget.setToolTip(tip)
        widget.setObjectName(f"field-{name}")
        self.widgets[name] = widget

    def _register(
        self, name: str, editor: QtWidgets.QWidget, shown: QtWidgets.QWidget | None
    ) -> QtWidgets.QWidget:
        """The Resources tab's editors join the dialog's fields (see `ResourcesTab`)."""
        self._adopt(name, editor)
        return self._with_error(shown if shown is not None else editor, self._error_label(name))

    # -- values ----------------------------------------------------------------------------
    def load(self, settings: Settings) -> None:
        self._loading = True
        for name, widget in self.widgets.items():
            write_field(widget, getattr(settings, name))
        self.devnet_box.setChecked(settings.uses_devnet)
        self._devnet_toggled(settings.uses_devnet)
        self._loading = False
        self.revalidate()

    def set_field(self, name: str, value: Any) -> None:
        """Type into / toggle a field as a user would (tests and the devnet box)."""
        widget = self.widgets[name]
        if isinstance(widget, QtWidgets.QLineEdit):
            widget.setText(str(value))
        else:
            write_field(widget, value)

    def candidate(self) -> dict[str, Any]:
        values = self.settings.model_dump()
        for name, widget in self.widgets.items():
            if name in self._locked:
                continue
            values[name] = read_field(widget)
        if self.devnet_box.isChecked():
            values["chain_rpc_urls"] = ""
        return values

    def _devnet_toggled(self, on: bool) -> None:
        for name in NETWORK_FIELDS:
            if name not in self._locked:
                self.widgets[name].setEnabled(not on)
        if not self._loading:
            self.revalidate()

    def _secret_errors(self) -> dict[str, str]:
        url = self.slack_url.text().strip()
        if url and not url.lower().startswith("https://"):
            return {"slack_webhook_url": "Slack webhook URL must start with https://"}
        if self.widgets["slack_enabled"].isChecked() and not (  # type: ignore[attr-defined]
            url or self.secrets.get(SLACK_WEBHOOK_URL)
        ):
            return {"slack_webhook_url": "Slack webhook URL is required when Slack is on"}
        return {}

    def revalidate(self, *_: Any) -> bool:
        if self._loading:
            return not self.errors
        errors = validate_candidate(self.candidate())
        errors.update(self._secret_errors())
        for name, editor in self.widgets.items():
            if isinstance(editor, FieldEditor) and (problem := editor.problem()):
                errors.setdefault(name, problem)
        self.errors = errors
        for name, label in self.error_labels.items():
            message = errors.get(name, "")
            label.setText(message)
            label.setVisible(bool(message))
            widget = self.widgets.get(name)
            if widget is not None:
                widget.setStyleSheet("border: 1px solid #c62828;" if message else "")
        general = [m for f, m in errors.items() if f not in self.error_labels]
        self.general_error.setText("\n".join(general))
        self.general_error.setVisible(bool(general))
        ok = not errors
        self.ok_button.setEnabled(ok)
        self.apply_button.setEnabled(ok)
        return ok

    def error_for(self, name: str) -> str:
        return self.errors.get(name, "")

    # -- saving ------------------------------------------------------------------------------
    def apply(self) -> bool:
        """Validate, then write secrets and settings (all or nothing), then apply live."""
        if not self.revalidate():
            return False
        values = self.candidate()
        try:
            new = updated(self.settings, **{k: values[k] for k in [*self.widgets]})
        except SettingsError as exc:
            self.general_error.setText(str(exc))
            self.general_error.show()
            return False
        old_values, new_values = self.settings.model_dump(), new.model_dump()
        changed = sorted(k for k in new_values if new_values[k] != old_values[k])
        secret_changes = {
            name: edit.text().strip()
            for name, edit in (
                (SLACK_WEBHOOK_URL, self.slack_url),
                (SMTP_PASSWORD, self.smtp_password),
            )
            if edit.text().strip()
        }
        previous = {name: self.secrets.get(name) for name in secret_changes}
        login = new.start_at_login if new.start_at_login != self.settings.start_at_login else None
        if login is not None and not self._set_autostart(login):
            return False
        try:
            for name, value in secret_changes.items():
                self.secrets.set(name, value)
            self._save(new)
        except Exception as exc:
            for name, old in previous.items():  # nothing half-saved
                if old is None:
                    self.secrets.delete(name)
                else:
                    self.secrets.set(name, old)
            if login is not None:
                self._set_autostart(not login)
            log.error("settings not saved: %s", exc)
            self.general_error.setText(f"Settings not saved: {exc}")
            self.general_error.show()
            return False
        self.settings = new
        not_live = self.runtime.apply_settings(new)
        restart = sorted((set(changed) & RESTART_FIELDS) | set(not_live))
        for edit in (self.slack_url, self.smtp_password):
            edit.clear()
            edit.setPlaceholderText("saved — type to replace")
        names = changed + [f"{n} (secret)" for n in secret_changes]
        summary = ", ".join(names) if names else "no changes"
        if restart:
            summary += f" — {', '.join(restart)} apply when the app is restarted"
        self.applied.emit(summary)
        return True

    def _set_autostart(self, enabled: bool) -> bool:
        """Switch the login entry; a failure (it names the path and the cause) is shown
        under Start at login and nothing is saved."""
        try:
            self._autostart().set_enabled(enabled)
        except Exception as exc:
            log.error("start at login not %s: %s", "enabled" if enabled else "disabled", exc)
            label = self.error_labels["start_at_login"]
            label.setText(f"Start at login could not be {'set' if enabled else 'unset'}: {exc}")
            label.show()
            return False
        return True

    def _ok(self) -> None:
        if self.apply():
            self.accept()
