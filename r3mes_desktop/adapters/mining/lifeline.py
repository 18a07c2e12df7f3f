"""Worker processes die with the app that started them, however it ends.

A SIGKILLed or crashed app cannot reap its workers, and a proof-of-work search left behind
burns every core until it finds a nonce nobody will read. So the owner keeps the only write
end of a pipe that is never written, and the child blocks on the read end in a daemon
thread: the owner's exit, in any way, closes the write end, the read returns EOF, and the
child exits at once (`os._exit`: whatever the child had to keep is already on disk, or is
redone from the journal by the next start). A multiprocessing pipe, so it works with the
spawn start method on every platform; a child spawned later inherits no copy of the write
end, so only the owner's death (or `cut`) ends its children.
"""

from __future__ import annotations

import contextlib
import os
import threading
from multiprocessing.connection import Connection
from typing import Any


class Lifeline:
    """One owner-side pipe for one or more children of the same job."""

    def __init__(self, ctx: Any) -> None:
        self.child_end, self._owner_end = ctx.Pipe(duplex=False)

    def handed_over(self) -> None:
        """Call once every child has been started: only they hold the read end now."""
        self.child_end.close()

    def cut(self) -> None:
        """End every child of this lifeline now (after a grace the owner gave them)."""
        self._owner_end.close()


def exit_with_owner(child_end: Connection | None, *, code: int = 0) -> None:
    """In the child: exit with `code` as soon as the owner is gone."""
    if child_end is None:
        return

    def watch() -> None:
        with contextlib.suppress(EOFError, OSError):
            child_end.recv_bytes()
        os._exit(code)

    threading.Thread(target=watch, name="owner-lifeline", daemon=True).start()
