"""The worker processes' CPU priority (settings `process_priority`), set by each worker
itself as it starts.

Set in the child, before torch or a search starts its threads, rather than from the app
afterwards: on Linux both the nice value and the scheduling policy belong to a thread, and
threads inherit them only when they are created, so a worker reniced from outside keeps
any thread it had already started at the old priority. It also leaves no window where a
fresh worker competes with the desktop at full priority.

- `normal`: left as the app runs.
- `low`: nice 10 (POSIX); below-normal priority class (Windows).
- `idle`: Linux SCHED_IDLE (runs only when a core has nothing else to do) plus nice 19;
  nice 19 where SCHED_IDLE is missing (macOS, BSD); idle priority class (Windows).

A lower priority never costs mining on an idle machine (the workers still get every free
cycle), and an unprivileged process may always lower its own priority; raising it back is
not attempted (it needs privileges), so a worker started at `low` is restarted to change.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any

from r3mes_desktop.core.errors import ValidationError

NICE = {"normal": 0, "low": 10, "idle": 19}


def apply_priority(level: str, *, os_module: Any = os, platform: str = sys.platform) -> str:
    """Lower this process's CPU priority to `level`; returns what was done, in words (the
    workers log it). Fails soft: a platform that refuses leaves the priority as it is."""
    if level not in NICE:
        raise ValidationError(f"process_priority must be one of {list(NICE)}, got {level!r}")
    if level == "normal":
        return "normal priority"
    if platform == "win32":
        return _windows(level)
    threads = _threads(platform)
    done = [_lower(level, tid, os_module) for tid in threads]
    more = f" ({len(threads)} threads)" if len(threads) > 1 else ""
    return ", ".join(done[0]) + more


def _threads(platform: str) -> list[int]:
    """The ids to lower: on Linux every thread this process has already started (each
    carries its own nice value and policy: numpy's BLAS pool may exist before this runs),
    elsewhere the process (0)."""
    if platform.startswith("linux"):
        with contextlib.suppress(OSError):
            return sorted(int(name) for name in os.listdir("/proc/self/task"))
    return [0]


def _lower(level: str, who: int, os_module: Any) -> list[str]:
    done = []
    if level == "idle" and hasattr(os_module, "SCHED_IDLE"):
        try:
            os_module.sched_setscheduler(who, os_module.SCHED_IDLE, os_module.sched_param(0))
            done.append("SCHED_IDLE")
        except OSError as exc:
            done.append(f"SCHED_IDLE refused ({exc.strerror or exc})")
    try:
        current = os_module.getpriority(os_module.PRIO_PROCESS, who)
        if current < NICE[level]:
            os_module.setpriority(os_module.PRIO_PROCESS, who, NICE[level])
        done.append(f"nice {max(current, NICE[level])}")
    except OSError as exc:
        done.append(f"nice refused ({exc.strerror or exc})")
    return done


def _windows(level: str) -> str:
    import psutil

    cls = psutil.IDLE_PRIORITY_CLASS if level == "idle" else psutil.BELOW_NORMAL_PRIORITY_CLASS
    with contextlib.suppress(psutil.Error):
        psutil.Process().nice(cls)
        return f"{level} priority class"
    return "priority class refused"


def current_priority(pid: int = 0) -> tuple[int, str]:
    """(nice value, scheduling policy name) of a process (tests and the bench; POSIX)."""
    nice = os.getpriority(os.PRIO_PROCESS, pid)
    policy = "other"
    if hasattr(os, "sched_getscheduler"):
        names = {
            getattr(os, n): n[6:].lower()
            for n in ("SCHED_OTHER", "SCHED_IDLE", "SCHED_BATCH")
            if hasattr(os, n)
        }
        policy = names.get(os.sched_getscheduler(pid), "other")
    return nice, policy
