"""One running app per data directory: a second launch raises the first window and exits.

The first instance listens on a QLocalServer whose name is derived from the user and the
data dir (two rigs with different R3MES_DATA_DIR may run side by side). A second launch
connects, says "raise", and quits. A server left behind by a crash is removed and replaced.
"""

from __future__ import annotations

import getpass
import hashlib

from r3mes_desktop.gui.qt import QtCore, QtNetwork, Signal


def server_name(data_dir: str) -> str:
    digest = hashlib.sha256(f"{getpass.getuser()}:{data_dir}".encode()).hexdigest()[:16]
    return f"r3mes-desktop-{digest}"


class SingleInstance(QtCore.QObject):
    activated = Signal()  # another launch asked us to show the window

    def __init__(self, name: str, parent: QtCore.QObject | None = None) -> None:
        super().__init__(parent)
        self.name = name
        self._server: QtNetwork.QLocalServer | None = None

    def notify_running(self, timeout_ms: int = 500) -> bool:
        """If an instance is running, ask it to raise its window; True if one answered."""
        socket = QtNetwork.QLocalSocket()
        socket.connectToServer(self.name)
        if not socket.waitForConnected(timeout_ms):
            return False
        socket.write(b"raise\n")
        socket.flush()
        socket.waitForBytesWritten(timeout_ms)
        socket.disconnectFromServer()
        return True

    def claim(self) -> bool:
        """Become the instance; False if another one is running (it has been raised)."""
        if self.notify_running():
            return False
        server = QtNetwork.QLocalServer(self)
        server.setSocketOptions(QtNetwork.QLocalServer.SocketOption.UserAccessOption)
        if not server.listen(self.name):
            QtNetwork.QLocalServer.removeServer(self.name)  # stale socket from a crash
            if not server.listen(self.name):
                return True  # cannot guard; run anyway rather than refuse to start
        server.newConnection.connect(self._on_connection)
        self._server = server
        return True

    def _on_connection(self) -> None:
        assert self._server is not None
        while self._server.hasPendingConnections():
            socket = self._server.nextPendingConnection()  # owned by the server
            socket.readyRead.connect(self._ready_read)
            socket.disconnected.connect(socket.deleteLater)
            self._read(socket)

    def _ready_read(self) -> None:
        socket = self.sender()
        if isinstance(socket, QtNetwork.QLocalSocket):
            self._read(socket)

    def _read(self, socket: QtNetwork.QLocalSocket) -> None:
        if b"raise" in bytes(socket.readAll().data()):
            self.activated.emit()

    def release(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
