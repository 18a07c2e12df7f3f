"""verify_on_chain reads the chain and the content store through the runtime's callers: the
adapters make plain calls, so the caller is the one layer that retries a read."""

from __future__ import annotations

from r3mes_desktop.adapters.mining.verify import verify_on_chain
from r3mes_desktop.core.clock import ManualClock
from r3mes_desktop.core.errors import NetworkError
from r3mes_desktop.core.events import EventBus, RetryScheduled
from r3mes_desktop.core.resilience import ServiceCaller
from r3mes_desktop.core.resilience.retry import RetryPolicy
from r3mes_desktop.core.steps import OnChainSubmission
from tests.unit.adapters.mining.test_verify_report import CID, CLAIM, DATA, HASH, MINER, NONCE, SPEC


class _FlakyChain:
    """Refuses the first read like a node that dropped the connection."""

    miner_address = MINER

    def __init__(self) -> None:
        self.calls = 0

    async def submission_of(self, round_id: int) -> OnChainSubmission | None:
        self.calls += 1
        if self.calls == 1:
            raise NetworkError("connection reset by peer", service="chain")
        return OnChainSubmission(
            round_id=round_id, miner=MINER, cid=CID, gradient_hash=HASH, pow_nonce=NONCE
        )


class _FlakyStore:
    def __init__(self) -> None:
        self.cats = 0

    async def cat(self, cid: str) -> bytes:
        self.cats += 1
        if self.cats == 1:
            raise NetworkError("IPFS daemon unreachable", service="ipfs")
        return DATA

    async def is_pinned(self, cid: str) -> bool:
        return True


async def test_reads_that_fail_once_are_retried_by_the_callers() -> None:
    bus = EventBus()
    events: list[object] = []
    bus.subscribe(events.append)
    clock = ManualClock()
    callers = {
        name: ServiceCaller(service=name, policy=RetryPolicy(max_retries=2), bus=bus, clock=clock)
        for name in ("chain", "ipfs")
    }
    chain, store = _FlakyChain(), _FlakyStore()

    report = await verify_on_chain(
        chain=chain,
        store=store,
        spec=SPEC,
        claim=CLAIM,
        recompute=False,
        fetch_timeout_s=5.0,
        callers=callers,
    )

    statuses = {c.name: c.status for c in report.checks}
    assert statuses["chain_record"] == "passed"
    assert statuses["content_fetch"] == "passed"
    assert (chain.calls, store.cats) == (2, 2)
    retried = [(e.service, e.operation) for e in events if isinstance(e, RetryScheduled)]
    assert retried == [("chain", "submission_of"), ("ipfs", "cat")]
