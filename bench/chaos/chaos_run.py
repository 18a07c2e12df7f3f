"""Chaos run: the real runtime (devnet, worker processes, journal, coordinator, miner) mining
N transactions while the fault plan breaks the chain node, the content store, the trainer and
the journal underneath it; then one fault-free start reconciles what was left unfinished.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.chaos.plans import CHAOS_PLAN, write_plan
from r3mes_desktop.core.events import Event, MinerStateChanged, TransactionStateChanged

log = logging.getLogger(__name__)

TERMINAL = frozenset({"committed", "failed", "rolled_back"})
CHAOS_SETTINGS: dict[str, Any] = {
    "pow_difficulty": 16,
    "max_retries": 4,
    "retry_initial_delay": 0.02,
    "retry_max_delay": 0.2,
    "breaker_open_timeout": 1.0,
    "call_timeout": 10.0,
    "transaction_timeout": 300.0,
    "max_active_transactions": 16,
    "model_preset": "tiny",
}
"""Short waits so thousands of transactions fit in minutes; the breaker still opens. Up to
16 transactions in flight: submissions parked in doubt behind an open breaker are re-driven
in bulkhead slots, and with 4 slots a growing backlog of them starved new rounds (200
transactions: 19 started per 30 s at first, 7 at the end; with 16 a steady 22-28)."""
ROUND_TTL_S = 90.0
STALE_NONCE_S = 10.0
"""The devnet's refill of an abandoned signature's nonce (30 s in the app's devnet, 600 s
on a real chain): a signed submission waits for its broadcast at most a few seconds here
(4 retries of at most 0.2 s, a 1 s breaker), and every parked submission behind a gap waited
the full 30 s, which was most of each reconciling start."""
OPERATOR_INTERVAL_S = 0.5
MINER_POLL_S = 1.0
"""The devnet operator wakes the miner when it opens rounds; polling is the fallback. At
0.1 s the miner's listings (a contract view over every open round, in pure-Python py-evm)
took about half of the EVM process's CPU (py-spy)."""
FINISH_LIMIT_S = 120.0
FEED_INTERVAL_S = 0.5  # a sqlite read of the journal; as often as the operator's pass
MAINTENANCE_INTERVAL_S = 2.0  # the app's is 15 s; parked submissions re-driven this often
MAX_EXTRA_ROUNDS = 40  # the contract holds at most 64 open rounds
OPEN_ROUNDS_BASE = 8
"""Rounds kept open for the miner besides those it runs: with the app's 3, the miner
waited for the operator's next pass (0.5 s) before nearly every start (the median gap
between two starts was 0.49 s in a 200-transaction run)."""
RECONCILE_LIMIT_S = 300.0
"""How long the fault-free reconciling start may take. Every submission parked behind an
abandoned nonce lands only once a new signature refills the gap (the outbox's task
completions do, about one a second, after `STALE_NONCE_S`): a 250-transaction run ended
with some 40 such gaps, refilled in about two minutes, the parked submissions behind
them due a moment after a 120 s limit."""
STALL_S = 2 * ROUND_TTL_S  # no new transaction for this long: the miner is stuck


@dataclass
class ChaosResult:
    attempted: int = 0
    finished: dict[str, int] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)
    reconciled_on_restart: int = 0
    seconds: float = 0.0
    notices: int = 0
    stalled: str | None = None  # the miner started no transaction for STALL_S: a failure

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def chaos_settings(**changes: Any) -> Any:
    from r3mes_desktop.support.config import load_settings, updated

    return updated(load_settings(use_env=False), **{**CHAOS_SETTINGS, **changes})


async def _open(
    settings: Any, data_dir: Path, *, mining: bool = True, inline_gradient_max: int | None = None
) -> Any:
    """A runtime on `data_dir`; one that will not mine spawns its training worker only if
    recovery needs it. `inline_gradient_max=0`: every gradient a file, not a journal row."""
    from r3mes_desktop.app.runtime import Runtime, RuntimeOptions

    options = RuntimeOptions.fast(
        data_dir=data_dir,
        # Each operator pass is two contract views in the devnet's EVM (pure Python, 28 ms
        # a pass measured on the shared 2-core machine): every 0.1 s that is a quarter of a
        # core; every 0.5 s still tops rounds up (several per pass) before the miner runs out.
        operator_interval_s=OPERATOR_INTERVAL_S,
        miner_poll_s=MINER_POLL_S,
        maintenance_interval_s=MAINTENANCE_INTERVAL_S,
        settings_overrides={},
        warm_trainer=mining,
        inline_gradient_max=inline_gradient_max,
    )
    runtime = Runtime(settings, options=options)
    return runtime


async def _open_devnet_runtime(settings: Any, data_dir: Path, *, mining: bool = True) -> Any:
    """`_open`, opened, with the devnet's harness timings (see `run_settings`)."""
    runtime = await _open(settings, data_dir, mining=mining)
    await runtime.open()
    # Rounds whose signed submission a fault rolled back are never re-signed by this miner;
    # the operator replaces them after this long (900 s outside the harness).
    runtime.devnet.operator.round_ttl_s = ROUND_TTL_S
    runtime.devnet.chain.stale_nonce_s = STALE_NONCE_S
    return runtime


def _round_template() -> str:
    from r3mes_desktop.app.runtime import RuntimeOptions

    fast = RuntimeOptions.fast()
    return (
        f"{fast.round_steps} training steps, difficulty {fast.round_difficulty}, "
        f"model preset {fast.round_preset} (RuntimeOptions.fast)"
    )


def run_settings() -> dict[str, Any]:
    """What the chaos run changes from the app's defaults, for the report."""
    from bench.chaos.plans import CHAOS_PLAN

    return {
        **CHAOS_SETTINGS,
        "devnet round_ttl_s": ROUND_TTL_S,
        "devnet stale_nonce_s": STALE_NONCE_S,
        "devnet operator_interval_s": OPERATOR_INTERVAL_S,
        "devnet rounds kept open": (
            f"{OPEN_ROUNDS_BASE} + one per round with a transaction running "
            f"(at most {MAX_EXTRA_ROUNDS} more)"
        ),
        "miner_poll_s": MINER_POLL_S,
        "maintenance_interval_s (outbox, undo retries, parked submissions)": (
            MAINTENANCE_INTERVAL_S
        ),
        "devnet rounds": _round_template(),
        "gradients": "files in the faulted run, journal rows (the default) on the next start",
        "fault plan": {k: v for k, v in CHAOS_PLAN.items() if isinstance(v, dict)},
    }


CLAIMED_SQL = """
SELECT count(DISTINCT round_id) FROM transactions
WHERE state NOT IN ('committed', 'rolled_back', 'failed')
"""
ABANDONED_SQL = """
SELECT s.round_id FROM submissions s
WHERE NOT EXISTS (SELECT 1 FROM transactions t WHERE t.round_id = s.round_id
                  AND t.state NOT IN ('rolled_back', 'failed'))
"""


def _claimed_rounds(journal: Path) -> tuple[int, set[int]]:
    """Rounds the miner is working on or signed for, which stay open for it on chain until
    its submission lands: (how many have a transaction running, parked in doubt included;
    the ids of those whose transactions all rolled back or failed: never signed again)."""
    try:
        conn = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=1)
        try:
            parked = int(conn.execute(CLAIMED_SQL).fetchone()[0])
            abandoned = {int(r) for (r,) in conn.execute(ABANDONED_SQL)}
            return parked, abandoned
        finally:
            conn.close()
    except sqlite3.OperationalError:  # not created yet, or busy: ask again next time
        return 0, set()


async def _feed_rounds(operator: Any, data_dir: Path) -> None:
    """The devnet operator keeps `keep_open` (3) rounds open that the miner has not
    submitted to on chain. A round the miner runs a transaction for stays among them until
    its submission lands (uploads and submissions wait out retries and an open breaker for
    seconds), a claimed round (signed for) whose transaction rolled back stays until the
    round TTL, though this miner never signs it again, and one parked in doubt stays until
    its nonce gap is refilled (30 s): with up to `max_active_transactions` running, the
    miner found nothing new to start for seconds at a time. The harness plays the network's
    part (a real one has many rounds open): it closes abandoned rounds at once (as their
    deadline would), keeps `OPEN_ROUNDS_BASE` open instead of 3, and opens one more round
    per round with a transaction running. (Each
    poll reads only the list of open rounds and the specs of new ones.)"""
    base = OPEN_ROUNDS_BASE
    journal = data_dir / "journal.sqlite"
    closed: set[int] = set()
    while True:
        parked, abandoned = await asyncio.to_thread(_claimed_rounds, journal)
        for round_id in sorted(abandoned - closed):
            closed.add(round_id)
            try:
                await operator.close_round(round_id)
            except Exception as exc:  # already closed (TTL), or replaced: nothing to do
                log.debug("closing abandoned round %d: %s", round_id, exc)
        operator.keep_open = base + min(parked, MAX_EXTRA_ROUNDS)
        await asyncio.sleep(FEED_INTERVAL_S)


async def _until_idle(runtime: Any, stopped: asyncio.Event, limit_s: float) -> None:
    """Until the stopping miner has no transaction running (or `limit_s` passed)."""
    deadline = time.monotonic() + limit_s
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopped.wait(), limit_s)
    with contextlib.suppress(TimeoutError):
        waiting = asyncio.shield(runtime.coordinator.wait_idle())  # a timeout cancels no task
        await asyncio.wait_for(waiting, max(deadline - time.monotonic(), 0.0))


async def _until_enough(enough: asyncio.Event, created: Any, wanted: int) -> str | None:
    """Wait until `wanted` transactions were created, or say how the miner got stuck."""
    seen = -1
    while not enough.is_set():
        if created() == seen:
            return f"miner stuck: no new transaction for {STALL_S:.0f} s at {seen} of {wanted}"
        seen = created()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(enough.wait(), STALL_S)
    return None


async def run_chaos(
    root: Path, *, transactions: int, seed: int = 0, plan: dict[str, Any] | None = None
) -> ChaosResult:
    """Mine `transactions` rounds under the plan, stop, reconcile fault-free once."""
    from r3mes_desktop.api.monitoring import Monitoring

    data_dir = root / "data"
    plan_path = write_plan(root / "fault-plan.toml", plan or CHAOS_PLAN, seed=seed)
    result = ChaosResult()
    created = 0
    enough = asyncio.Event()
    stopped = asyncio.Event()

    def watch(event: Event) -> None:
        nonlocal created
        if isinstance(event, MinerStateChanged) and event.new_state == "idle":
            stopped.set()  # the only way back to idle after start: nothing runs any more
        if not isinstance(event, TransactionStateChanged):
            if type(event).__name__ == "Notice" and getattr(event, "source", "") == "faults":
                result.notices += 1
            return
        if event.old_state is None:
            created += 1
            if created >= transactions:
                enough.set()

    t0 = time.perf_counter()
    # Gradients as files here (rows, the default for small ones, in the crash part and in
    # the fault-free start below): each kind meets faults, and recovery reads the other.
    runtime = await _open(chaos_settings(fault_plan=plan_path), data_dir, inline_gradient_max=0)
    unsubscribe = runtime.bus.subscribe(watch)
    await runtime.open()
    # Rounds whose signed submission a fault rolled back are never re-signed by this miner;
    # the operator replaces them after this long (900 s outside the harness).
    runtime.devnet.operator.round_ttl_s = ROUND_TTL_S
    runtime.devnet.chain.stale_nonce_s = STALE_NONCE_S
    feeding = asyncio.ensure_future(_feed_rounds(runtime.devnet.operator, data_dir))
    monitoring = await Monitoring.attach(runtime, api=False)
    try:
        await runtime.miner.start()
        result.stalled = await _until_enough(enough, lambda: created, transactions)
        log.info("chaos run: %d transactions started in %.0f s", created, time.perf_counter() - t0)
        await runtime.miner.finish_then_stop()
        # Everything started gets to finish. A transaction a fault left waiting (a journal
        # write lost to a full disk ends its task) is not waited for: the miner is idle once
        # no task runs, and the fault-free start below reconciles what they left.
        await _until_idle(runtime, stopped, FINISH_LIMIT_S)
        await runtime.miner.stop()
        result.faults = runtime.faults.by_kind()
    finally:
        feeding.cancel()
        unsubscribe()
        await monitoring.close()
        await runtime.close()
    result.attempted = created
    result.reconciled_on_restart = await reconcile(data_dir)
    result.seconds = time.perf_counter() - t0
    from bench.chaos.invariants import journal_rows

    states: dict[str, int] = {}
    for row in journal_rows(data_dir):
        states[row["state"]] = states.get(row["state"], 0) + 1
    result.finished = states
    return result


async def reconcile(data_dir: Path, *, limit_s: float = RECONCILE_LIMIT_S) -> int:
    """The next fault-free start, run until nothing is left unfinished (or `limit_s`):
    recovery drives every unfinished transaction to its end, the outbox and pending
    compensations are retried, and the app's maintenance (every second here) re-drives
    submissions parked in doubt when due (one behind an abandoned nonce settles only once
    the devnet refills the gap, up to 30 s later). Returns how many were unfinished."""
    from bench.chaos.invariants import journal_rows

    journal_file = data_dir / "journal.sqlite"
    rows = journal_rows(data_dir) if journal_file.exists() else []
    unfinished = sum(r["state"] not in TERMINAL for r in rows)
    runtime = await _open_devnet_runtime(chaos_settings(), data_dir, mining=False)
    try:
        coordinator = runtime.coordinator
        deadline = time.monotonic() + limit_s
        for attempt in itertools.count():
            await coordinator.wait_idle()
            await coordinator.retry_compensations()
            await coordinator.deliver_outbox()
            left = await coordinator.journal.unfinished()
            if (attempt >= 2 and not left) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5 if left else 0.0)
        return unfinished
    finally:
        await runtime.close()
