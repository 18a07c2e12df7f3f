"""Settings → Account: create or import the miner key into the encrypted keystore.

The private key is typed once (import) or generated (create), encrypted with scrypt in a
worker thread (it takes about a second, which must not freeze the window) and never shown
again: the field is cleared as soon as the keystore is written. The password can be kept
in the OS keyring only when the user ticks the box.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from r3mes_desktop.adapters.chain.keystore import Keystore, PasswordVault
from r3mes_desktop.gui.bridge import TaskRunner
from r3mes_desktop.gui.ports import RuntimePort
from r3mes_desktop.gui.qt import QtWidgets, Signal
from r3mes_desktop.support.config import paths

log = logging.getLogger(__name__)


class AccountTab(QtWidgets.QWidget):
    key_written = Signal(str)  # the new address

    def __init__(self, runtime: RuntimePort, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        keystore = runtime.keystore  # None until the runtime opened: the default location
        self.keystore: Keystore = keystore if keystore is not None else Keystore(paths().data_dir)
        self.tasks = TaskRunner(self)
        self.tasks.failed.connect(lambda _name, message: self._show_error(message))

        self.address = QtWidgets.QLabel()
        self.address.setObjectName("account-address")
        self.address.setTextInteractionFlags(
            self.address.textInteractionFlags()
            | self.address.textInteractionFlags().TextSelectableByMouse
        )
        self.password = QtWidgets.QLineEdit()
        self.password.setObjectName("account-password")
        self.password.setEchoMode(QtWidgets.QLineEdit.EchoMode.Password)
        self.password.setPlaceholderText("keystore password")
        self.confirm = QtWidgets.QLineEdit()
        self.confirm.setObjectName("account-confirm")
        self.confirm.setEchoMode(QtWidgets.QLineEdit.EchoMode.Password)
        self.confirm.setPlaceholderText("the same password again")
        self.private_key = QtWidgets.QLineEdit()
        self.private_key.setObjectName("account-private-key")
        self.private_key.setEchoMode(QtWidgets.QLineEdit.EchoMode.Password)
        self.private_key.setPlaceholderText("64 hex digits, only to import an existing key")
        self.remember = QtWidgets.QCheckBox("Remember the password in the OS keyring")
        self.remember.setObjectName("account-remember")
        if not PasswordVault.backend_available():
            self.remember.setEnabled(False)
            self.remember.setToolTip("No OS keyring is available on this system")
        self.create_button = QtWidgets.QPushButton("Create new key")
        self.create_button.setObjectName("account-create")
        self.import_button = QtWidgets.QPushButton("Import key")
        self.import_button.setObjectName("account-import")
        self.create_button.clicked.connect(self.create_key)
        self.import_button.clicked.connect(self.import_key)
        self.message = QtWidgets.QLabel()
        self.message.setObjectName("account-message")
        self.message.setWordWrap(True)
        self._lay_out()
        self._refresh()

    def _lay_out(self) -> None:
        form = QtWidgets.QFormLayout(self)
        form.addRow("Address", self.address)
        form.addRow("Keystore", QtWidgets.QLabel(str(self.keystore.path)))
        form.addRow("Password", self.password)
        form.addRow("Confirm", self.confirm)
        form.addRow("Private key", self.private_key)
        form.addRow("", self.remember)
        buttons = QtWidgets.QHBoxLayout()
        buttons.addWidget(self.create_button)
        buttons.addWidget(self.import_button)
        buttons.addStretch(1)
        form.addRow("", buttons)
        form.addRow("", self.message)
        note = QtWidgets.QLabel(
            "The key is encrypted with your password (scrypt, V3 keystore, file mode 0600) "
            "and is never shown again. It is for real networks: the embedded devnet mines "
            "with its own throwaway key."
        )
        note.setWordWrap(True)
        note.setStyleSheet("color: #555;")
        form.addRow("", note)

    def _refresh(self) -> None:
        exists = self.keystore.exists()
        self.address.setText(self.keystore.address() if exists else "no key yet")
        for widget in (self.create_button, self.import_button, self.private_key, self.confirm):
            widget.setEnabled(not exists)
        if exists:
            self.create_button.setToolTip("A key exists; the keystore is never overwritten")

    def _show_error(self, message: str) -> None:
        self.message.setStyleSheet("color: #c62828;")
        self.message.setText(message)

    def _password_problem(self) -> str | None:
        if not self.password.text():
            return "password: must not be empty"
        if self.password.text() != self.confirm.text():
            return "confirm: the two passwords differ"
        return None

    def create_key(self) -> None:
        self._write(lambda pw: self.keystore.create(pw), "Created")

    def import_key(self) -> None:
        key = self.private_key.text()
        self.private_key.clear()  # the key leaves the widget at once
        if not key.strip():
            self._show_error("private key: paste the 64 hex digits to import")
            return
        self._write(lambda pw: self.keystore.import_hex(key, pw), "Imported")

    def _write(self, action: Any, verb: str) -> None:
        problem = self._password_problem()
        if problem:
            self._show_error(problem)
            return
        password = self.password.text()
        remember = self.remember.isChecked()
        self.password.clear()
        self.confirm.clear()
        self.create_button.setEnabled(False)
        self.import_button.setEnabled(False)
        self.message.setStyleSheet("color: #555;")
        self.message.setText("Encrypting the key…")

        async def run() -> str:
            try:
                address: str = await asyncio.to_thread(action, password)
            finally:
                self._refresh()
            if remember:
                PasswordVault(opted_in=True, address=address).store(password)
            return address

        def done(address: str) -> None:
            self.message.setStyleSheet("color: #2e7d32;")
            self.message.setText(f"{verb} key for {address}. It will not be shown again.")
            self.key_written.emit(address)

        self.tasks.spawn(run(), name="Write keystore", on_done=done)
