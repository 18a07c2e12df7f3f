"""Asking for the keystore password without blocking the loop.

A modal `exec()` would spin a nested Qt loop inside a coroutine (re-entrancy trouble with
qasync); the dialog is opened window-modal instead and a future is completed by its
accepted/rejected signals. The password is handed to the runtime and never stored here.
"""

from __future__ import annotations

import asyncio

from r3mes_desktop.gui.qt import QtWidgets


async def ask_password(parent: QtWidgets.QWidget | None, address: str) -> str | None:
    """The password for `address`'s keystore, or None if the user cancelled."""
    dialog = QtWidgets.QInputDialog(parent)
    dialog.setObjectName("keystore-password-dialog")
    dialog.setWindowTitle("Unlock the miner key")
    dialog.setLabelText(f"Keystore password for {address}:")
    dialog.setTextEchoMode(QtWidgets.QLineEdit.EchoMode.Password)
    answer: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()

    def done(accepted: bool) -> None:
        if not answer.done():
            answer.set_result(dialog.textValue() if accepted else None)
        dialog.setTextValue("")
        dialog.deleteLater()

    dialog.accepted.connect(lambda: done(True))
    dialog.rejected.connect(lambda: done(False))
    dialog.open()
    return await answer
