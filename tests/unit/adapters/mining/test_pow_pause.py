"""Proof of work pauses with the governor: held searches use no CPU and, resumed, find
the same nonce a search never held finds."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from r3mes_desktop.adapters.mining.pow import NonceSearch, ProcessPow
from r3mes_desktop.core.pow import is_valid_pow, pow_prefix

MINER = "0x" + "ab" * 20
GH = bytes(range(32))
DIFFICULTY = 20  # about a million hashes: long enough to hold it mid-search


def first_valid(round_id: int, difficulty: int) -> int:
    """The smallest valid nonce (process 0 of a one-process search scans from 0 up)."""
    search = NonceSearch(pow_prefix(GH, MINER, round_id), difficulty, processes=1).start()
    try:
        while search.status().nonce is None:
            search.stop_event.wait(0.05)
        nonce = search.status().nonce
    finally:
        search.cancel()
        search.join()
    assert nonce is not None
    return nonce


def hashes_over(search: NonceSearch, seconds: float) -> int:
    before = search.status().hashes
    time.sleep(seconds)
    return search.status().hashes - before


def test_a_held_search_stops_hashing_and_resumed_finds_the_same_nonce() -> None:
    expected = first_valid(5, DIFFICULTY)
    search = NonceSearch(pow_prefix(GH, MINER, 5), DIFFICULTY, processes=1).start()
    try:
        deadline = time.monotonic() + 30
        while search.status().hashes < 20_000 and time.monotonic() < deadline:
            time.sleep(0.01)
        search.suspend()
        assert search.suspended
        time.sleep(0.2)  # the process reaches its batch boundary (a few ms)
        held = search.status()
        assert held.nonce is None, "difficulty too low: the search ended before the hold"
        assert hashes_over(search, 0.5) == 0
        assert all(p.is_alive() for p in search.procs)
        search.resume()
        while search.status().nonce is None:
            search.stop_event.wait(0.05)
        status = search.status()
    finally:
        search.cancel()
        search.join()
    assert status.nonce == expected
    assert status.hashes == expected + 1  # no candidate skipped or counted twice


def test_cancel_ends_a_held_search() -> None:
    search = NonceSearch(pow_prefix(GH, MINER, 6), 32, processes=2).start()
    search.suspend()
    started = time.monotonic()
    search.cancel()
    search.join(timeout=10)
    assert time.monotonic() - started < 5
    assert not any(p.is_alive() for p in search.procs)
    assert all(p.exitcode == 0 for p in search.procs)  # exited on the stop, not killed


@pytest.mark.asyncio
async def test_process_pow_pause_holds_the_search_and_resume_finishes_it() -> None:
    expected = first_valid(7, DIFFICULTY)
    pow_ = ProcessPow(processes=1, report_interval_s=0.05)
    rates: list[float] = []

    def progress(_fraction: float, detail: Any) -> None:
        rates.append(detail["hash_rate"])

    pow_.pause()  # a search started while paused starts held
    solving = asyncio.ensure_future(
        pow_.solve(
            gradient_hash=GH, miner=MINER, round_id=7, difficulty=DIFFICULTY, progress=progress
        )
    )
    await asyncio.sleep(1.0)
    assert not solving.done()
    assert rates and max(rates[-5:]) == 0.0
    pow_.resume()
    nonce = await asyncio.wait_for(solving, 60)
    assert nonce == expected and is_valid_pow(GH, MINER, 7, nonce, DIFFICULTY)
    assert max(rates) > 0
