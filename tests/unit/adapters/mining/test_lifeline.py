"""Worker processes end with their owner: cut by it, or when it is SIGKILLed mid-search."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import psutil

from r3mes_desktop.adapters.mining.pow import NonceSearch
from r3mes_desktop.core.pow import pow_prefix

PREFIX = pow_prefix(bytes(32), "0x" + "42" * 20, 1)
UNREACHABLE = bytes(32)  # no digest is below zero: the search would run for ever

OWNER = f"""
import sys, time
from r3mes_desktop.adapters.mining.pow import NonceSearch
search = NonceSearch({PREFIX!r}, 32, processes=2, target=bytes(32)).start()
while not all(search.per_process()):
    time.sleep(0.01)
print(" ".join(str(p.pid) for p in search.procs), flush=True)
time.sleep(120)
"""


def _gone_within(pids: list[int], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        alive = [p for p in pids if psutil.pid_exists(p) and not _zombie(p)]
        if not alive:
            return True
        time.sleep(0.05)
    return False


def _zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_cutting_the_lifeline_ends_a_search_that_was_never_cancelled() -> None:
    search = NonceSearch(PREFIX, 32, processes=1, target=UNREACHABLE).start()
    try:
        while not search.per_process()[0]:
            assert search.status().running
            time.sleep(0.01)
        search.lifeline.cut()  # no stop event: only the lifeline can end it
        search.procs[0].join(10)
        assert search.procs[0].exitcode == 0
    finally:
        search.cancel()
        search.join()


def test_a_sigkilled_owner_leaves_no_search_process_behind() -> None:
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER], stdout=subprocess.PIPE, start_new_session=True
    )
    try:
        assert owner.stdout is not None
        pids = [int(p) for p in owner.stdout.readline().split()]
        assert len(pids) == 2 and all(psutil.pid_exists(p) for p in pids)
        owner.send_signal(signal.SIGKILL)
        owner.wait(10)
        assert _gone_within(pids, 5.0), "search processes outlived their SIGKILLed owner"
    finally:
        if owner.poll() is None:
            owner.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(owner.pid, signal.SIGKILL)  # anything of ours that is somehow left
        owner.wait(10)
        if owner.stdout is not None:
            owner.stdout.close()
