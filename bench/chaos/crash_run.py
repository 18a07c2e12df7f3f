"""Crash run: the headless miner (`r3mes-miner run --fast`, a real subprocess with its own
data dir) is SIGKILLed at random moments and restarted, then stopped with SIGTERM a few
times; recovery time is measured from each restart to the journal showing every previously
unfinished transaction reconciled (terminal) or progressing (state or update time moved).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TERMINAL = frozenset({"committed", "failed", "rolled_back"})
STARTUP_KILLS = 0.2  # share of kills during startup/recovery rather than while mining
CHILD_GRACE_S = 2.0  # a killed miner's workers should notice and exit within this


@dataclass
class CrashResult:
    kills: int = 0
    sigterms: int = 0
    sigterm_clean_exits: int = 0
    recoveries_s: list[float] = field(default_factory=list)
    unrecovered: int = 0  # restarts whose recovery was not seen within the limit
    lingering_children: int = 0  # worker processes alive CHILD_GRACE_S after the miner died
    startups_s: list[float] = field(default_factory=list)  # process start → mining started
    reaping_s: float = 0.0  # waiting for killed miners' worker processes to exit
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        times = sorted(self.recoveries_s)
        data["recovery_p50_s"] = statistics.median(times) if times else None
        data["recovery_max_s"] = max(times) if times else None
        data["recoveries_measured"] = len(times)
        starts = sorted(self.startups_s)
        data["startup_p50_s"] = statistics.median(starts) if starts else None
        data["startup_max_s"] = max(starts) if starts else None
        return data


def miner_env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        R3MES_DATA_DIR=str(root / "data"),
        R3MES_CONFIG_DIR=str(root / "config"),
        R3MES_LOG_DIR=str(root / "logs"),
        R3MES_CACHE_DIR=str(root / "cache"),
        PYTHONUNBUFFERED="1",
    )
    return env


def _rows(journal: Path, *, read_only: bool = True) -> dict[str, tuple[str, float]]:
    """Every transaction's (state, updated_at); none while the journal has no table yet (a
    miner killed during its first start)."""
    uri = f"file:{journal}?mode=ro" if read_only else f"file:{journal}"
    conn = sqlite3.connect(uri, uri=True, timeout=2)
    try:
        rows = conn.execute("SELECT id, state, updated_at FROM transactions").fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return {}
        raise
    finally:
        conn.close()
    return {tx: (state, updated) for tx, state, updated in rows}


def _unfinished(journal: Path) -> dict[str, tuple[str, float]]:
    if not journal.exists():
        return {}
    for attempt in range(20):
        try:
            # a killed writer can leave a WAL index only a writable connection may rebuild
            rows = _rows(journal, read_only=attempt < 10)
        except sqlite3.OperationalError:
            time.sleep(0.05)
            continue
        return {tx: row for tx, row in rows.items() if row[0] not in TERMINAL}
    raise RuntimeError(f"journal {journal} unreadable")


def _states(journal: Path, ids: set[str]) -> dict[str, tuple[str, float]]:
    return {tx: row for tx, row in _rows(journal).items() if tx in ids}


def _recovered(journal: Path, before: dict[str, tuple[str, float]]) -> bool:
    try:
        now = _states(journal, set(before))
    except sqlite3.OperationalError:
        return False
    return all(now[tx][0] in TERMINAL or now[tx] != before[tx] for tx in before if tx in now)


def _start(root: Path) -> subprocess.Popen[bytes]:
    log = (root / "miner-output.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "r3mes_desktop.cli", "-q", "run", "--fast"],
        env=miner_env(root),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: we reap exactly what we started
    )


def _kill_group(proc: subprocess.Popen[bytes], result: CrashResult) -> None:
    """SIGKILL the miner alone (a crash), then count and reap worker processes it left."""
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    started = time.monotonic()
    deadline = started + CHILD_GRACE_S
    while time.monotonic() < deadline and _group_alive(proc.pid):
        time.sleep(0.05)
    if _group_alive(proc.pid):
        result.lingering_children += 1
        _reap_group(proc.pid)
    result.reaping_s += time.monotonic() - started


def _reap_group(pgid: int) -> None:
    """SIGKILL what is left of the group and wait until it is gone: a worker still exiting
    must not overlap the next start."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.02)


def _tail(path: Path, lines: int = 4) -> str:
    """The last lines of a file, on one line (for an error message a CI log shows)."""
    try:
        text = path.read_bytes()[-4000:].decode("utf-8", "replace")
    except OSError as exc:
        return f"({exc})"
    return " | ".join(line.strip() for line in text.splitlines()[-lines:])


def _group_alive(pgid: int) -> bool:
    """Whether a live (not zombie) process of the group is left: a container whose init
    does not reap would otherwise show exited workers as alive forever."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    import psutil

    for proc in psutil.process_iter(["status"]):
        with contextlib.suppress(psutil.Error, OSError):
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(proc.pid) == pgid:
                return True
    return False


def _wait_mining(log: Path, offset: int, proc: subprocess.Popen[bytes], *, limit_s: float) -> bool:
    """Until the miner's log (past `offset`) says mining started (signal handlers in place);
    False if it did not within `limit_s`."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and proc.poll() is None:
        if log.exists():
            with log.open("rb") as fh:
                if os.fstat(fh.fileno()).st_size < offset:  # rotated since: all of it is new
                    offset = 0
                fh.seek(offset)
                if b"mining started" in fh.read():
                    return True
        time.sleep(0.1)
    return False


def _measure_recovery(
    journal: Path, before: dict[str, tuple[str, float]], started: float, limit_s: float
) -> float | None:
    while time.monotonic() - started < limit_s:
        if _recovered(journal, before):
            return time.monotonic() - started
        time.sleep(0.05)
    return None


def run_crashes(
    root: Path,
    *,
    crashes: int,
    sigterms: int = 5,
    seed: int = 0,
    max_uptime_s: float = 12.0,
    recovery_limit_s: float = 90.0,
) -> CrashResult:
    """Kill the miner `crashes` times at random moments, then `sigterms` clean stops."""
    rng = random.Random(seed)
    result = CrashResult()
    journal = root / "data" / "journal.sqlite"
    output = root / "miner-output.log"
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for i in range(crashes + sigterms):
        before = _unfinished(journal)
        miner_log = root / "logs" / "r3mes.log"
        offset = miner_log.stat().st_size if miner_log.exists() else 0  # this start's lines
        started = time.monotonic()
        proc = _start(root)
        if before:
            took = _measure_recovery(journal, before, started, recovery_limit_s)
            if took is None:
                result.unrecovered += 1
            else:
                result.recoveries_s.append(took)
        if i >= crashes or rng.random() >= STARTUP_KILLS:
            # a clean stop is asked of a running miner (its handlers installed); most kills
            # too land while it mines: training, upload, submission, completion
            if _wait_mining(miner_log, offset, proc, limit_s=recovery_limit_s):
                result.startups_s.append(time.monotonic() - started)
            time.sleep(rng.uniform(0.2, max_uptime_s))
        else:  # the rest during startup and recovery
            time.sleep(rng.uniform(0.5, 4.0))
        if proc.poll() is not None:
            raise RuntimeError(
                f"miner exited by itself with {proc.returncode} (start {i + 1}); its output "
                f"ends: {_tail(output)}"
            )
        if i < crashes:
            _kill_group(proc, result)
            result.kills += 1
        else:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=120)
            result.sigterms += 1
            result.sigterm_clean_exits += int(code == 143)
            if code != 143:
                log.error("crash run: SIGTERM exit %s; output: %s", code, _tail(output))
            if _group_alive(proc.pid):
                result.lingering_children += 1
                _reap_group(proc.pid)
        log.info(
            "crash run: start %d of %d done (%s), %d unfinished before it, %.0f s so far",
            i + 1,
            crashes + sigterms,
            "SIGKILL" if i < crashes else "SIGTERM",
            len(before),
            time.perf_counter() - t0,
        )
    result.seconds = time.perf_counter() - t0
    return result
