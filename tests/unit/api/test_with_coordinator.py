"""The API over the real coordinator (fake services, ManualClock): the protocol fits."""

from __future__ import annotations

from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from r3mes_desktop.api.app import create_app
from r3mes_desktop.core.errors import PermanentError
from r3mes_desktop.core.workproof import Reason
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


async def test_stats_metrics_and_transactions_carry_verdicts_and_credits(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, verdicts=True)
    coordinator = rig.coordinator
    app = create_app(coordinator=coordinator, bus=rig.bus, token=TOKEN)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    await coordinator.start(background=False)
    try:
        accepted = await coordinator.run_transaction(make_spec(1))
        rejected = await coordinator.run_transaction(make_spec(2))
        waiting = await coordinator.run_transaction(make_spec(3))
        rig.chain.post_verdict(1, accepted=True)
        rig.chain.post_verdict(2, accepted=False, reason=int(Reason.NO_OPENINGS))
        assert coordinator.verdict_watch is not None
        await coordinator.verdict_watch.poll()

        stats = (await (await client.get("/stats")).json())["atomic_coordinator"]
        assert (stats["verdicts_accepted"], stats["verdicts_rejected"]) == (1, 1)
        assert (stats["verdicts_pending"], stats["credits_total"]) == (1, 100)
        assert stats["rejection_reasons"]["no_openings"] == 1

        body = await (await client.get(f"/transaction/{rejected.transaction_id}")).json()
        assert (body["verdict"], body["credits"], body["verdict_reason"]) == ("rejected", 0, 3)
        assert body["verdict_reason_text"] == "challenge not answered in the verification window"
        body = await (await client.get(f"/transaction/{accepted.transaction_id}")).json()
        assert (body["verdict"], body["credits"]) == ("accepted", 100)
        body = await (await client.get(f"/transaction/{waiting.transaction_id}")).json()
        assert (body["verdict"], body["credits"]) == ("awaiting", None)

        text = await (await client.get("/metrics")).text()
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text)
            for s in fam.samples
        }
        assert samples[("r3mes_credits_earned_total", ())] == 100
        assert samples[("r3mes_submissions_by_verdict", (("verdict", "pending"),))] == 1
        assert samples[("r3mes_rejections_total", (("reason", "no_openings"),))] == 1
    finally:
        await coordinator.close()
        await client.close()


async def test_the_network_model_is_the_same_in_metrics_and_stats(tmp_path: Path) -> None:
    """/metrics and /stats read the journal the model watcher writes: its newest version
    is the current one in both."""
    rig = make_rig(tmp_path, versions=True)
    rig.chain.publish_version(1, eval_loss=2.5)
    rig.chain.publish_version(3, eval_loss=1.875)
    coordinator = rig.coordinator
    app = create_app(
        coordinator=coordinator, bus=rig.bus, token=TOKEN, breakers=coordinator.breakers
    )
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    await coordinator.start(background=False)
    try:
        assert coordinator.model_watch is not None
        await coordinator.model_watch.poll()
        text = await (await client.get("/metrics")).text()
        stats = (await (await client.get("/stats")).json())["atomic_coordinator"]
    finally:
        await client.close()
        await coordinator.close()

    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }
    assert samples[("r3mes_model_version", ())] == 2
    assert samples[("r3mes_model_eval_loss", ())] == 1.875
    assert (stats["model_version"], stats["model_eval_loss"]) == (2, 1.875)
