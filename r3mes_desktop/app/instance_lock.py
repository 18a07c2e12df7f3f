"""One miner per data directory: an advisory lock the CLI `run` (and the runtime) holds.

Two processes driving the same journal would both resume the same unfinished transactions
and double-submit; read-only commands do not need the lock, commands that change the
journal (cleanup, resume, dead letters) refuse while another process holds it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from types import TracebackType

LOCK_FILE = "miner.lock"

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]
    import msvcrt


class MinerBusyError(RuntimeError):
    """Another process holds the data directory's miner lock."""

    def __init__(self, message: str, holder: str) -> None:
        super().__init__(message)
        self.message = message
        self.holder = holder


class InstanceLock:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = None

    def holder(self) -> str:
        with contextlib.suppress(OSError):
            return self.path.read_text(encoding="utf-8").strip() or "unknown"
        return "unknown"

    def is_held_elsewhere(self) -> bool:
        """Whether another process holds the lock right now (this one does not take it)."""
        if self._fd is not None or not self.path.exists():
            return False
        try:
            self.acquire()
        except MinerBusyError:
            return True
        self.release()
        return False

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            else:
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            os.close(fd)
            holder = self.holder()
            raise MinerBusyError(
                f"another r3mes miner (pid {holder}) is using {self.path.parent}; "
                "stop it first, or use its local API",
                holder,
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the lock
            self._fd = None

    def __enter__(self) -> InstanceLock:
        self.acquire()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
