"""One running app per data directory: a second launch raises the first window and exits.

The claim is a `QLockFile` (in the data dir for the app): whoever holds it is the instance,
so two launches racing each other cannot both win. The holder then listens on a
QLocalServer whose name is derived from the user and the data dir (two rigs with different
R3MES_DATA_DIR may run side by side); a later launch fails to take the lock, connects, says
"raise", and quits. A lock or socket left behind by a crash is stale: QLockFile sees that
the process that wrote the lock is gone and takes it over, and the new holder replaces the
dead socket (it may, since nobody else can hold the lock).
"""

from __future__ import annotations

import getpass
import hashlib
import logging
import os
import tempfile
import time

from r3mes_desktop.gui.qt import QtCore, QtNetwork, Signal

LOCK_FILE = "desktop.lock"
log = logging.getLogger(__name__)


def server_name(data_dir: str) -> str:
    digest = hashlib.sha256(f"{getpass.getuser()}:{data_dir}".encode()).hexdigest()[:16]
    return f"r3mes-desktop-{digest}"


class SingleInstance(QtCore.QObject):
    activated = Signal()  # another launch asked us to show the window

    def __init__(
        self,
        name: str,
        parent: QtCore.QObject | None = None,
        *,
        lock_path: str | None = None,
        notify_patience_s: float = 2.0,
    ) -> None:
        super().__init__(parent)
        self.name = name
        self.lock_path = lock_path or os.path.join(tempfile.gettempdir(), f"{name}.lock")
        self.notify_patience_s = notify_patience_s
        self._lock: QtCore.QLockFile | None = None
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
        """Become the instance; False if another one holds the lock (it has been raised).

        A launch that loses the lock never touches the holder's socket. The holder may not
        be listening yet (it took the lock a moment ago), so the "raise" is retried for
        `notify_patience_s`. A lock that cannot be written at all (read-only or broken data
        dir) does not stop the app: it runs unguarded, as before the lock, with a warning.
        """
        lock = QtCore.QLockFile(self.lock_path)
        lock.setStaleLockTime(0)  # held for the app's lifetime: stale only if its pid died
        try:
            os.makedirs(os.path.dirname(self.lock_path) or ".", exist_ok=True)
        except OSError as exc:
            log.warning("single-instance lock unusable (%s): running unguarded", exc)
            return self._claim_unguarded()
        if not lock.tryLock(0):
            if lock.error() != QtCore.QLockFile.LockError.LockFailedError:
                log.warning(
                    "single-instance lock %s unusable (%s): running unguarded",
                    self.lock_path,
                    lock.error().name,
                )
                return self._claim_unguarded()
            deadline = time.monotonic() + self.notify_patience_s
            while not self.notify_running() and time.monotonic() < deadline:
                time.sleep(0.05)
            return False
        self._lock = lock
        self._listen()
        return True

    def _claim_unguarded(self) -> bool:
        if self.notify_running():
            return False
        self._listen()
        return True

    def _listen(self) -> None:
        server = QtNetwork.QLocalServer(self)
        server.setSocketOptions(QtNetwork.QLocalServer.SocketOption.UserAccessOption)
        if not server.listen(self.name):
            QtNetwork.QLocalServer.removeServer(self.name)  # a crashed holder's socket
            if not server.listen(self.name):
                return  # run anyway, just without the "raise" channel
        server.newConnection.connect(self._on_connection)
        self._server = server

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
        if self._lock is not None:
            self._lock.unlock()
            self._lock = None
