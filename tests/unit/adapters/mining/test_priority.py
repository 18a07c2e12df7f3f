"""Worker processes lower their own CPU priority (settings process_priority)."""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
from typing import Any

import pytest

from r3mes_desktop.adapters.mining.priority import apply_priority, current_priority
from r3mes_desktop.core.errors import ValidationError


class FakeOs:
    """The os calls apply_priority makes, recorded; `refuse` makes them fail."""

    SCHED_IDLE = 5
    PRIO_PROCESS = 0

    def __init__(self, nice: int = 0, refuse: bool = False) -> None:
        self.nice = nice
        self.refuse = refuse
        self.calls: list[tuple[Any, ...]] = []

    def sched_param(self, value: int) -> int:
        return value

    def sched_setscheduler(self, who: int, policy: int, param: int) -> None:
        if self.refuse:
            raise PermissionError(1, "Operation not permitted")
        self.calls.append(("sched", who, policy))

    def getpriority(self, which: int, who: int) -> int:
        return self.nice

    def setpriority(self, which: int, who: int, value: int) -> None:
        if self.refuse:
            raise PermissionError(1, "Operation not permitted")
        self.calls.append(("nice", who, value))


def test_levels_map_to_nice_and_sched_idle() -> None:
    fake = FakeOs()
    assert apply_priority("normal", os_module=fake, platform="darwin") == "normal priority"
    assert fake.calls == []
    assert apply_priority("low", os_module=fake, platform="darwin") == "nice 10"
    assert fake.calls == [("nice", 0, 10)]
    fake = FakeOs()
    assert apply_priority("idle", os_module=fake, platform="darwin") == "SCHED_IDLE, nice 19"
    assert fake.calls == [("sched", 0, 5), ("nice", 0, 19)]


def test_a_worker_already_nicer_is_not_raised_and_refusals_are_reported() -> None:
    fake = FakeOs(nice=15)
    assert apply_priority("low", os_module=fake, platform="darwin") == "nice 15"
    assert fake.calls == []
    said = apply_priority("idle", os_module=FakeOs(refuse=True), platform="darwin")
    assert "SCHED_IDLE refused" in said and "nice refused" in said


def test_an_unknown_level_names_the_setting() -> None:
    with pytest.raises(ValidationError, match="process_priority"):
        apply_priority("realtime")


def _report(level: str, conn: Any) -> None:
    import threading

    early = threading.Thread(target=threading.Event().wait, args=(5,), daemon=True)
    early.start()  # a thread started before the priority is set (numpy's BLAS pool)
    said = apply_priority(level)
    late = threading.Thread(target=threading.Event().wait, args=(5,), daemon=True)
    late.start()
    tids = sorted(int(t) for t in os.listdir("/proc/self/task"))
    conn.send((said, [current_priority(tid) for tid in tids]))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SCHED_IDLE is Linux's")
@pytest.mark.parametrize(("level", "expected"), [("idle", (19, "idle")), ("low", (10, "other"))])
def test_every_thread_of_a_real_process_runs_at_the_level(
    level: str, expected: tuple[int, str]
) -> None:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_report, args=(level, child))
    process.start()
    child.close()
    try:
        said, threads = parent.recv()
    finally:
        process.join(10)
        parent.close()
    assert len(threads) >= 3
    assert all(t == expected for t in threads), (said, threads)
