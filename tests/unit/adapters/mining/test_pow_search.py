"""Nonce search on all cores: found, verified, rejected when altered, cancellable."""

from __future__ import annotations

import asyncio
import hashlib
import sys
from typing import Any

import pytest

from r3mes_desktop.adapters.mining.pow import ProcessPow, solve_blocking
from r3mes_desktop.adapters.mining.verify import verify_submission
from r3mes_desktop.core.errors import ValidationError
from r3mes_desktop.core.pow import is_valid_pow

GH = bytes.fromhex("5f" * 32)
MINER = "0x" + "42" * 20


def test_blocking_search_finds_a_valid_nonce_at_16_bits() -> None:
    nonce = solve_blocking(GH, MINER, 3, 16, processes=2)
    assert is_valid_pow(GH, MINER, 3, nonce, 16)


@pytest.mark.parametrize("difficulty", [18, 20])
async def test_process_pow_solves_publishes_rate_and_alterations_fail(difficulty: int) -> None:
    events: list[tuple[float, dict[str, Any]]] = []
    pow_ = ProcessPow(processes=2, report_interval_s=0.05)
    nonce = await pow_.solve(
        gradient_hash=GH,
        miner=MINER,
        round_id=11,
        difficulty=difficulty,
        progress=lambda f, d: events.append((f, dict(d))),
    )
    assert is_valid_pow(GH, MINER, 11, nonce, difficulty)
    assert events and events[-1][1]["hashes"] > 0 and events[-1][1]["processes"] == 2
    assert all(0.0 <= f <= 1.0 for f, _ in events)
    assert not is_valid_pow(GH, MINER, 11, nonce + 1, difficulty)
    assert not is_valid_pow(GH, MINER, 12, nonce, difficulty)
    assert not is_valid_pow(GH, "0x" + "43" * 20, 11, nonce, difficulty)
    assert not is_valid_pow(bytes.fromhex("5e" + "5f" * 31), MINER, 11, nonce, difficulty)


async def test_search_is_cancellable() -> None:
    hashing = asyncio.Event()
    task = asyncio.create_task(
        ProcessPow(processes=2, report_interval_s=0.05).solve(
            gradient_hash=GH,
            miner=MINER,
            round_id=1,
            difficulty=32,
            progress=lambda _f, d: hashing.set() if d["hash_rate"] > 0 else None,
        )
    )
    await hashing.wait()  # the processes are running and reporting
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()


async def test_difficulty_out_of_range_is_rejected_before_searching() -> None:
    with pytest.raises(ValidationError, match="difficulty"):
        await ProcessPow().solve(
            gradient_hash=GH, miner=MINER, round_id=1, difficulty=40, progress=lambda f, d: None
        )


def test_verify_submission_recomputes_gradient_and_checks_pow() -> None:
    from r3mes_desktop.adapters.mining.settings import MiningConfig
    from r3mes_desktop.adapters.mining.training import train_round
    from r3mes_desktop.adapters.mining.worker import plan_for
    from r3mes_desktop.core.steps import RoundSpec

    spec = RoundSpec(
        round_id=4,
        seed=8,
        difficulty=16,
        base_model_id="m",
        steps=5,
        hyperparams={"preset": "tiny"},
    )
    config = MiningConfig(device="cpu", num_threads=1)
    out = train_round(plan_for(spec, config), num_threads=1)
    nonce = solve_blocking(out.gradient_hash, MINER, 4, 16, processes=2)
    good = verify_submission(
        spec=spec,
        miner=MINER,
        nonce=nonce,
        gradient_hash=out.gradient_hash,
        data=out.data,
        config=config,
    )
    assert good.ok, good.describe()
    forged = verify_submission(
        spec=spec, miner=MINER, nonce=nonce, gradient_hash=GH, recompute=True, config=config
    )
    assert not forged.gradient_matches
    wrong_nonce = verify_submission(
        spec=spec, miner=MINER, nonce=nonce ^ 1, gradient_hash=out.gradient_hash, recompute=False
    )
    assert not wrong_nonce.pow_valid
    assert wrong_nonce.check("recompute").status == "skipped"  # not compared: never a match
    assert not wrong_nonce.gradient_matches
    assert "torch" in sys.modules  # recomputation is the one path that loads torch


@pytest.mark.parametrize("hasher", ["openssl", "builtin", "auto"])
def test_one_process_finds_the_first_valid_nonce_and_counts_every_hash(hasher: str) -> None:
    """Nonces are scanned in order from 0 in process 0's range: the answer is the smallest
    valid nonce (no candidate skipped or mis-numbered) and the counter equals nonce + 1 —
    also while "auto" alternates implementations batch by batch."""
    from r3mes_desktop.adapters.mining.pow import NonceSearch
    from r3mes_desktop.core.pow import pow_prefix

    search = NonceSearch(pow_prefix(GH, MINER, 9), 16, processes=1, hasher=hasher).start()
    try:
        while search.status().nonce is None:
            search.stop_event.wait(0.05)
        search.join()
        status = search.status()
    finally:
        search.cancel()
        search.join()
    nonce = status.nonce
    assert nonce is not None and is_valid_pow(GH, MINER, 9, nonce, 16)
    assert not any(is_valid_pow(GH, MINER, 9, n, 16) for n in range(nonce))
    assert status.hashes == nonce + 1
    if hasher != "auto":
        assert search.hashers() == [hasher]


def test_hasher_choice_is_validated_and_auto_tries_every_available_one() -> None:
    from r3mes_desktop.adapters.mining.pow import hashers_for, sha256_constructors

    assert hashers_for("auto") == list(sha256_constructors())
    assert hashers_for("openssl") == ["openssl"]
    with pytest.raises(ValidationError, match="hasher"):
        ProcessPow(hasher="fast")


def test_auto_settles_on_one_hasher_and_keeps_searching() -> None:
    from r3mes_desktop.adapters.mining.pow import TRIAL_BATCHES, NonceSearch, sha256_constructors
    from r3mes_desktop.core.pow import pow_prefix

    search = NonceSearch(pow_prefix(GH, MINER, 9), 32, processes=1, target=bytes(32)).start()
    try:
        while not search.hashers()[0]:
            assert search.status().running
            search.stop_event.wait(0.02)
        assert search.hashers()[0] in sha256_constructors()
        assert search.status().hashes >= TRIAL_BATCHES * len(sha256_constructors()) * 4096
    finally:
        search.cancel()
        search.join()


def test_a_full_recompute_follows_the_packages_threads_and_memory_retries(tmp_path) -> None:
    """A bound run trained with one thread that retried step 2 out of memory: `verify`
    recomputes it with a two-thread config and no memory trouble, and still reproduces
    its bytes (before, a retry made the recompute differ)."""
    from r3mes_desktop.adapters.mining import trace
    from r3mes_desktop.adapters.mining.commitments import TraceDir
    from r3mes_desktop.adapters.mining.settings import MiningConfig
    from r3mes_desktop.adapters.mining.worker import plan_for
    from r3mes_desktop.core import workproof
    from r3mes_desktop.core.steps import RoundSpec

    spec = RoundSpec(
        round_id=5,
        seed=9,
        difficulty=16,
        base_model_id="m",
        steps=4,
        hyperparams={"preset": "tiny"},
    )
    failed: list[int] = []

    def out_of_memory(step: int, micro: int) -> None:
        if step == 2 and not failed:
            failed.append(micro)
            raise MemoryError("injected")

    package = trace.train_bound(
        plan_for(spec, MiningConfig(device="cpu"), MINER),
        miner=MINER,
        assignment=workproof.assignment(spec.seed, MINER, spec.round_id),
        trace=TraceDir(tmp_path / "run"),
        num_threads=1,
        micro_hook=out_of_memory,
    )
    digest = hashlib.sha256(package).digest()
    nonce = solve_blocking(digest, MINER, 5, 16, processes=2)
    report = verify_submission(
        spec=spec,
        miner=MINER,
        nonce=nonce,
        gradient_hash=digest,
        data=package,
        config=MiningConfig(device="cpu", num_threads=2),
    )
    assert failed == [8]
    assert report.check("recompute").status == "passed", report.describe()
