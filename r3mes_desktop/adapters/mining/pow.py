"""Nonce search for the contract's proof-of-work rule, on all cores (no torch here).

The 68-byte preimage is 60 fixed bytes ‖ nonce (uint64 BE). With the nonce's high 4 bytes
fixed, the first 64-byte SHA-256 block is constant, so each process hashes it once and
copies that midstate: every candidate then costs one compression. Process i owns the high
words i, i + n, i + 2n, … (disjoint ranges); there is no attempt cap — the space is 2^64.
Shared-memory counters carry the hash rate; one shared event stops everyone (found or
cancelled). Byte-string comparison of two 32-byte big-endian values equals integer
comparison, so the target test is a single `<` on bytes.

Why the inner loop looks the way it does (measured, see docs/mining.md): in Python the
cost per candidate is the three C calls copy → update → digest, not the compression. With
OpenSSL 3 each `copy()` and each `digest()` (which copies internally) duplicates an EVP
context, about 0.3 µs apiece; CPython's own SHA-256 (`_sha256`, `_sha2` from 3.12) copies
with a memcpy but compresses without SHA-NI. Which wins depends on the machine, so every
search process alternates between both for its first batches and keeps the faster
("auto"). The loop calls the type's unbound methods (no bound-method object per call),
iterates precomputed 2-byte nonce tails, and touches shared memory (counter, stop flag)
once per `BATCH`.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import math
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from r3mes_desktop.adapters.mining.lifeline import Lifeline, exit_with_owner
from r3mes_desktop.adapters.mining.priority import apply_priority
from r3mes_desktop.core.clock import Clock, SystemClock
from r3mes_desktop.core.errors import ResourceError, ValidationError
from r3mes_desktop.core.pow import is_valid_pow, pow_prefix, pow_target, validate_difficulty
from r3mes_desktop.core.steps import ProgressCallback

CHUNK = 1 << 16
BATCH = 1 << 12  # hashes between counter updates and stop checks (a few ms)
_TAILS = [i.to_bytes(2, "big") for i in range(CHUNK)]
_BATCHES = [_TAILS[i : i + BATCH] for i in range(0, CHUNK, BATCH)]
TRIAL_BATCHES = 16  # batches per implementation before "auto" settles (~0.1 s in all)
HASHERS = ("auto", "openssl", "builtin")


def sha256_constructors() -> dict[str, Callable[[bytes], Any]]:
    """The SHA-256 implementations this interpreter has: OpenSSL's (hashlib) and CPython's."""
    found: dict[str, Callable[[bytes], Any]] = {"openssl": hashlib.sha256}
    for module in ("_sha2", "_sha256"):  # CPython's own: 3.12+ / 3.11
        try:
            found["builtin"] = importlib.import_module(module).sha256
            break
        except (ImportError, AttributeError):
            continue
    return found


def validate_hasher(hasher: str) -> str:
    if hasher not in HASHERS:
        raise ValidationError(f"pow hasher must be one of {list(HASHERS)}, got {hasher!r}")
    return hasher


def hashers_for(hasher: str) -> list[str]:
    """The implementations a search may use: the named one, or for "auto" every one here."""
    available = sha256_constructors()
    if validate_hasher(hasher) == "auto":
        return list(available)
    if hasher not in available:
        raise ValidationError(f"pow hasher {hasher!r} is not available in this Python")
    return [hasher]


def search_worker(
    prefix: bytes,
    target: bytes,
    index: int,
    stride: int,
    first_high: int,
    stop: Any,
    found: Any,
    has_found: Any,
    counters: Any,
    hasher: str = "auto",
    chosen: Any = None,
    lifeline: Connection | None = None,
    priority: str = "normal",
    gate: Any = None,
) -> None:
    """Scan nonces (high << 32 | mid << 16 | tail) until `stop` is set; report via shared
    memory. With several implementations, the first `TRIAL_BATCHES` batches alternate
    between them — real search work, nothing wasted — and the one with the fastest batch
    is kept (the fastest, not the mean: a batch preempted by another process says nothing
    about the hasher). `chosen[index]` records it (1 OpenSSL, 2 CPython's). It stays one
    function on purpose: the hot loop keeps its state (bound methods, batch, pick) in locals,
    and a helper call or attribute look-up per batch would cost hash rate."""
    apply_priority(priority)  # settings process_priority, before the lifeline's thread
    exit_with_owner(lifeline)  # an app killed mid-search must not leave us hashing
    names = hashers_for(hasher)
    news = [sha256_constructors()[name] for name in names]
    calls = [(t.copy, t.update, t.digest) for t in (type(new(b"")) for new in news)]
    best = [math.inf] * len(names)
    trials = TRIAL_BATCHES * len(names) if len(names) > 1 else 0
    pick = 0
    if not trials and chosen is not None:
        chosen[index] = 1 if names[0] == "openssl" else 2
    high = first_high + index
    while high < 1 << 32:
        head = prefix + high.to_bytes(4, "big")
        blocks = [new(head) for new in news]  # compresses block one
        for mid in range(CHUNK):
            states = []
            for (cp, upd, _), block in zip(calls, blocks, strict=True):
                state = cp(block)
                upd(state, _TAILS[mid])
                states.append(state)
            for batch in _BATCHES:
                if trials:
                    pick = trials % len(names)
                    started = time.perf_counter()
                cp, upd, dig = calls[pick]
                state = states[pick]
                for tail in batch:
                    h = cp(state)
                    upd(h, tail)
                    if dig(h) < target:
                        done = int.from_bytes(tail, "big")
                        counters[index] += done % BATCH + 1
                        with found.get_lock():
                            if not has_found.value:
                                found.value = (high << 32) | (mid << 16) | done
                                has_found.value = 1
                        stop.set()
                        return
                counters[index] += BATCH
                if trials:
                    best[pick] = min(best[pick], time.perf_counter() - started)
                    trials -= 1
                    if not trials:
                        pick = best.index(min(best))
                        if chosen is not None:
                            chosen[index] = 1 if names[pick] == "openssl" else 2
                if stop.is_set():
                    return
                if gate is not None and not gate.is_set():
                    gate.wait()  # held (`NonceSearch.suspend`): no CPU until resumed
                    if stop.is_set():
                        return
        high += stride


def search_context() -> mp.context.SpawnContext | mp.context.ForkServerContext:
    """Where search processes come from: a fork server on Linux, spawn elsewhere.

    A spawned searcher starts a fresh interpreter and imports this module: about 0.2 s per
    process, paid at every round (~half of a low-difficulty round's PoW time, measured by
    bench.chaos). The fork server is started once, with this module preloaded, and forks
    each searcher from that small, thread-free process in milliseconds. It holds no copy of
    a lifeline's owner end, so `Lifeline` still ends searchers with their owner, and it
    exits itself when its owner does. Frozen (PyInstaller) builds keep spawn."""
    if sys.platform != "linux" or getattr(sys, "frozen", False):
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    return ctx


@dataclass
class SearchStatus:
    hashes: int
    nonce: int | None
    running: bool


class NonceSearch:
    """A running multi-process search (sync API: benches, verify, and `ProcessPow`)."""

    def __init__(
        self,
        prefix: bytes,
        difficulty: int,
        *,
        processes: int = 0,
        first_high: int = 0,
        target: bytes | None = None,
        hasher: str = "auto",
        priority: str = "normal",
    ) -> None:
        self.processes = processes or os.cpu_count() or 1
        self.target = target or pow_target(difficulty).to_bytes(32, "big")
        validate_hasher(hasher)
        ctx = search_context()
        self.stop_event = ctx.Event()
        self.gate = ctx.Event()  # set: search; clear: hold (`suspend`)
        self.gate.set()
        self.found = ctx.Value("Q", 0)
        self.has_found = ctx.Value("b", 0, lock=False)  # written under found's lock
        self.counters = ctx.Array("Q", self.processes, lock=False)
        self.chosen = ctx.Array("b", self.processes, lock=False)  # 0 until the hasher is picked
        self.lifeline = Lifeline(ctx)
        self.procs = [
            ctx.Process(
                target=search_worker,
                args=(
                    prefix,
                    self.target,
                    i,
                    self.processes,
                    first_high,
                    self.stop_event,
                    self.found,
                    self.has_found,
                    self.counters,
                    hasher,
                    self.chosen,
                    self.lifeline.child_end,
                    priority,
                    self.gate,
                ),
                name=f"r3mes-pow-{i}",
                daemon=True,
            )
            for i in range(self.processes)
        ]

    def start(self) -> NonceSearch:
        for proc in self.procs:
            proc.start()
        self.lifeline.handed_over()
        return self

    def status(self) -> SearchStatus:
        with self.found.get_lock():
            found = int(self.found.value) if self.has_found.value else None
        running = any(p.is_alive() for p in self.procs)
        if found is None and not running:
            codes = [p.exitcode for p in self.procs]
            raise ResourceError(f"proof-of-work processes exited early (exit codes {codes})")
        return SearchStatus(sum(self.counters), found, running)

    def per_process(self) -> list[int]:
        """Hashes done by each process so far."""
        return list(self.counters)

    def hashers(self) -> list[str]:
        """The SHA-256 implementation each process picked ("" while it is still choosing)."""
        return [{1: "openssl", 2: "builtin"}.get(int(c), "") for c in self.chosen]

    def suspend(self) -> None:
        """Hold every search process at its next batch boundary (a few ms): it then waits
        on the gate, using no CPU, and `resume` continues it from the nonce it stood at, so
        the search covers the same ranges and finds the same nonce as one never held."""
        self.gate.clear()

    def resume(self) -> None:
        self.gate.set()

    @property
    def suspended(self) -> bool:
        return not self.gate.is_set()

    def cancel(self) -> None:
        self.stop_event.set()
        self.gate.set()  # a held process wakes, sees the stop, and exits

    def join(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join(1.0)
        self.lifeline.cut()


def solve_blocking(
    gradient_hash: bytes,
    miner: str | bytes,
    round_id: int,
    difficulty: int,
    *,
    processes: int = 0,
    hasher: str = "auto",
    on_status: Callable[[SearchStatus], None] | None = None,
) -> int:
    """Search to completion in this thread (CLI and tests); returns a valid nonce."""
    validate_difficulty(difficulty)
    search = NonceSearch(
        pow_prefix(gradient_hash, miner, round_id),
        difficulty,
        processes=processes,
        hasher=hasher,
    )
    search.start()
    try:
        while True:
            search.stop_event.wait(0.05)
            status = search.status()
            if on_status is not None:
                on_status(status)
            if status.nonce is not None:
                return status.nonce
    finally:
        search.cancel()
        search.join()


class ProcessPow:
    """`core.steps.ProofOfWork` on all cores; cancel the awaiting task to stop the search.

    `pause()` / `resume()` (the resource governor) hold and continue the running search's
    processes, and a search started while paused starts held: proof of work then uses no
    CPU, and its progress reports a hash rate of 0 until resumed.

    Held by a gate each process checks between batches, not by SIGSTOP: a stopped process
    runs no thread at all, so its lifeline could not end it if the app were killed during
    the pause (it would stay stopped for good), and one stopped while holding the result's
    lock would block `status()` on the event loop."""

    def __init__(
        self,
        *,
        processes: int = 0,
        report_interval_s: float = 0.25,
        clock: Clock | None = None,
        hasher: str = "auto",
        priority: str = "normal",
    ) -> None:
        self.processes = processes
        self.hasher = validate_hasher(hasher)
        self.priority = priority
        self.report_interval_s = report_interval_s
        self.clock = clock or SystemClock()
        self._paused = False
        self._searches: set[NonceSearch] = set()

    @property
    def paused(self) -> bool:
        return self._paused

    def pause(self) -> None:
        """Hold every running search where it stands (and any started until `resume`)."""
        self._paused = True
        for search in list(self._searches):
            search.suspend()

    def resume(self) -> None:
        self._paused = False
        for search in list(self._searches):
            search.resume()

    async def solve(
        self,
        *,
        gradient_hash: bytes,
        miner: str,
        round_id: int,
        difficulty: int,
        progress: ProgressCallback,
    ) -> int:
        validate_difficulty(difficulty)
        prefix = pow_prefix(gradient_hash, miner, round_id)
        loop = asyncio.get_running_loop()
        search = NonceSearch(
            prefix,
            difficulty,
            processes=self.processes,
            hasher=self.hasher,
            priority=self.priority,
        )
        await loop.run_in_executor(None, search.start)
        self._searches.add(search)
        if self._paused:
            search.suspend()
        expected = 2.0**difficulty
        started = last_t = self.clock.monotonic()
        last_hashes = 0
        try:
            while True:
                await loop.run_in_executor(None, search.stop_event.wait, self.report_interval_s)
                status = search.status()
                now = self.clock.monotonic()
                rate = (status.hashes - last_hashes) / max(now - last_t, 1e-9)
                last_t, last_hashes = now, status.hashes
                detail = {
                    "hash_rate": rate,
                    "hashes": status.hashes,
                    "expected_hashes": expected,
                    "processes": search.processes,
                    "elapsed_s": now - started,
                }
                # Chance of having found a nonce by now; the search itself never gives up.
                progress(1.0 - math.exp(-status.hashes / expected), detail)
                if status.nonce is not None:
                    nonce = status.nonce
                    break
        finally:
            self._searches.discard(search)
            search.cancel()
            await asyncio.shield(loop.run_in_executor(None, search.join))
        if not is_valid_pow(gradient_hash, miner, round_id, nonce, difficulty):
            raise ResourceError("proof-of-work search returned an invalid nonce (corrupt worker)")
        return nonce
