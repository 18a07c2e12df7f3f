"""An API app on a loopback test server, with a fake coordinator view and real breakers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiohttp.test_utils import TestClient, TestServer

from r3mes_desktop.api.app import create_app
from r3mes_desktop.core.clock import ManualClock
from r3mes_desktop.core.events import EventBus
from r3mes_desktop.core.resilience.breaker import BreakerRegistry
from tests.helpers.monitoring_fakes import FakeCoordinatorView

TOKEN = "t" * 43


@dataclass
class Api:
    client: TestClient
    coordinator: FakeCoordinatorView
    bus: EventBus
    breakers: BreakerRegistry
    clock: ManualClock

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {TOKEN}"}


async def make_api(*, protect_reads: bool = False, heartbeat_s: float = 15.0) -> Api:
    bus = EventBus()
    clock = ManualClock()
    breakers = BreakerRegistry(clock=clock, bus=bus)
    coordinator = FakeCoordinatorView(
        stats={
            "total_transactions": 5,
            "committed_transactions": 3,
            "success_rate": 0.6,
            "by_state": {"committed": 3, "rolled_back": 1, "training": 1},
            "error_breakdown": {"network_errors": 2, "validation_errors": 1},
        },
        statuses={
            "tx-1": {"transaction_id": "tx-1", "state": "committed", "progress": {"training": True}}
        },
        errors={"by_category": {"network": 2}, "by_step": {"ipfs_upload": 2}},
    )
    app = create_app(
        coordinator=coordinator,
        bus=bus,
        token=TOKEN,
        breakers=breakers,
        protect_reads=protect_reads,
        heartbeat_s=heartbeat_s,
    )
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return Api(client, coordinator, bus, breakers, clock)


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    made = await make_api()
    try:
        yield made
    finally:
        await made.client.close()
