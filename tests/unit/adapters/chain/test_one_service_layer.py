"""One service-call layer: a failing chain node costs exactly the retry policy's attempts.

The saga's `ServiceCaller` is the only layer that retries a chain call; the chain client
under it makes plain node calls. A node that fails every `eth_estimateGas` (the first node
call of the signing step) must see 1 + max_retries requests for that one step, and every
retry must carry the transaction id, so each one is a `retry` row of its history.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from r3mes_desktop.core.clock import ManualClock
from r3mes_desktop.core.coordinator import Coordinator
from r3mes_desktop.core.errors import NetworkError
from r3mes_desktop.core.events import EventBus, RetryScheduled
from r3mes_desktop.core.journal import Journal
from r3mes_desktop.core.resilience.breaker import BreakerConfig, BreakerRegistry
from r3mes_desktop.support.config.settings import Settings
from tests.helpers.fakes import FakePow, FakeTrainer, Faults
from tests.helpers.service_fakes import gradient, make_caller, open_devnet, solve_pow

RETRIES = 2


class _NodeDownFor:
    """The devnet's node, failing every call of one method like an unreachable RPC URL."""

    def __init__(self, inner: Any, method: str) -> None:
        self._inner, self._method = inner, method
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        if name != self._method:
            return getattr(self._inner, name)

        async def down(*_args: Any) -> Any:
            self.calls += 1
            raise NetworkError(f"node unreachable ({name})", service="chain")

        return down


async def test_a_failing_node_sees_exactly_the_policys_attempts_for_one_saga_step(
    tmp_path: Path,
) -> None:
    clock = ManualClock()
    # A caller with retries for the devnet's connect step: it must not reach the client's
    # node calls (before, it wrapped each of them: 3 x 3 attempts here).
    devnet = await open_devnet(
        tmp_path / "world", clock=clock, caller=make_caller("chain", clock=clock, retries=RETRIES)
    )
    node = _NodeDownFor(devnet.evm, "estimate_gas")
    devnet.chain.transport = node
    bus = EventBus()
    events: list[Any] = []
    bus.subscribe(events.append)
    faults = Faults()
    coordinator = Coordinator(
        journal=Journal(tmp_path / "journal.db"),
        trainer=FakeTrainer(faults, clock=clock),
        pow=FakePow(faults),
        store=devnet.store,
        chain=devnet.chain,
        task_api=devnet.task_api,
        settings=Settings(max_retries=RETRIES, retry_initial_delay=1.0),
        breakers=BreakerRegistry(
            BreakerConfig(window_size=50, failure_threshold=50), clock=clock, bus=bus
        ),
        bus=bus,
        clock=clock,
        artifacts_dir=tmp_path / "artifacts",
    )
    await coordinator.start(background=False)
    try:
        spec = (await devnet.chain.open_rounds())[0]
        status = await coordinator.run_transaction(spec)
        await coordinator.wait_idle()
        status = await coordinator.status(status.transaction_id)
    finally:
        await coordinator.close()
        await devnet.close()

    assert status.state != "committed"
    assert node.calls == 1 + RETRIES
    retries = [e for e in events if isinstance(e, RetryScheduled)]
    assert [(e.operation, e.transaction_id) for e in retries] == [
        ("sign_submission", status.transaction_id)
    ] * RETRIES
    rows = [h for h in status.history if h["kind"] == "retry"]
    assert [(h["step"], h["attempt"]) for h in rows] == [
        ("sign_submission", n) for n in range(1, RETRIES + 1)
    ]


class _FirstSendFails:
    """The devnet's node, dropping the first raw transaction it is sent."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.dropped = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def send_raw(self, raw: bytes) -> str:
        if not self.dropped:
            self.dropped += 1
            raise NetworkError("connection reset while sending", service="chain")
        return await self._inner.send_raw(raw)


async def test_a_gap_fill_interrupted_by_the_network_is_finished_by_the_next_run(
    tmp_path: Path,
) -> None:
    """The caller's retry re-runs `fill_nonce_gaps`: the filler the failed run signed (its
    nonce now held by it) is sent by the re-run instead of being taken for a live
    transaction and leaving the hole open."""
    clock = ManualClock()
    devnet = await open_devnet(tmp_path, clock=clock)
    a, b, _ = await devnet.chain.open_rounds()
    start = await devnet.evm.nonce(devnet.miner_address)
    signatures = []
    for spec, tag in ((a, "a"), (b, "b")):
        _, ghash = gradient(tag)
        pow_nonce = solve_pow(ghash, devnet.miner_address, spec.round_id, spec.difficulty)
        signatures.append(
            await devnet.chain.sign_submission(
                round_id=spec.round_id, cid="bafkreiaaaa", gradient_hash=ghash, pow_nonce=pow_nonce
            )
        )
    await clock.sleep(devnet.chain.stale_nonce_s + 1)  # the first one was never sent
    node = _FirstSendFails(devnet.evm)
    devnet.chain.transport = node
    with pytest.raises(NetworkError, match="connection reset"):
        await devnet.chain.fill_nonce_gaps()
    assert node.dropped == 1
    assert await devnet.evm.nonce(devnet.miner_address) == start  # the hole is still open

    assert await devnet.chain.fill_nonce_gaps() == 1
    assert await devnet.evm.nonce(devnet.miner_address) == start + 1
    await devnet.chain.broadcast(signatures[1])
    assert (await devnet.chain.wait_receipt(signatures[1].tx_hash, timeout_s=5)).success
    await devnet.close()
