"""The API over the real coordinator (fake services, ManualClock): the protocol fits."""

from __future__ import annotations

from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from r3mes_desktop.api.app import create_app
from r3mes_desktop.core.errors import PermanentError
from tests.helpers.coordinator_rig import make_rig
from tests.helpers.fakes import make_spec

TOKEN = "k" * 43


async def test_endpoints_over_a_real_coordinator(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    coordinator = rig.coordinator
    app = create_app(
        coordinator=coordinator, bus=rig.bus, token=TOKEN, breakers=coordinator.breakers
    )
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    await coordinator.start(background=False)
    try:
        ok = await coordinator.run_transaction(make_spec(1))
        rig.faults.fail("add_and_pin", PermanentError("model gone"), times=None)
        await coordinator.run_transaction(make_spec(2))

        stats = (await (await client.get("/stats")).json())["atomic_coordinator"]
        assert stats["total_transactions"] == 2 and stats["committed_transactions"] == 1

        body = await (await client.get(f"/transaction/{ok.transaction_id}")).json()
        assert body["state"] == "committed" and body["history"]
        assert (await client.get("/transaction/mining_tx_unknown")).status == 404

        analysis = await client.get("/error-breakdown")
        assert analysis.status == 200 and isinstance(await analysis.json(), dict)

        auth = {"Authorization": f"Bearer {TOKEN}"}
        report = await (
            await client.post("/cleanup-stale", headers=auth, json={"older_than_s": 1})
        ).json()
        assert report["count"] == 0 and report["older_than_s"] == 1

        breakers = await (await client.get("/circuit-breakers")).json()
        assert set(breakers) >= {"chain", "ipfs", "task_api"}

        text = await (await client.get("/metrics")).text()
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text)
            for s in fam.samples
        }
        assert samples[("r3mes_transactions", (("state", "committed"),))] == 1
        assert samples[("r3mes_errors_total", (("category", "permanent"),))] >= 1
        assert samples[("r3mes_commit_latency_seconds_count", ())] == 1
        assert (
            samples[
                (
                    "r3mes_transaction_failures_total",
                    (("category", "permanent"), ("step", "ipfs_upload")),
                )
            ]
            == 1
        )
    finally:
        await coordinator.close()
        await client.close()
