"""Every endpoint's happy path, its errors as JSON, and the token rules."""

from __future__ import annotations

import pytest

from r3mes_desktop.core.resilience.breaker import BreakerState
from tests.helpers.monitoring_fakes import unreachable
from tests.unit.api.conftest import Api, make_api


async def test_stats_wraps_coordinator_statistics(api: Api) -> None:
    resp = await api.client.get("/stats")
    assert resp.status == 200
    body = await resp.json()
    assert body["atomic_coordinator"]["total_transactions"] == 5


async def test_transaction_found_missing_and_malformed(api: Api) -> None:
    resp = await api.client.get("/transaction/tx-1")
    assert resp.status == 200 and (await resp.json())["state"] == "committed"
    resp = await api.client.get("/transaction/nope")
    assert resp.status == 404
    assert "no transaction nope" in (await resp.json())["error"]["message"]
    resp = await api.client.get("/transaction/" + "x" * 200)
    assert resp.status == 400
    assert "1..128" in (await resp.json())["error"]["message"]


async def test_cleanup_stale_needs_token_and_validates(api: Api) -> None:
    resp = await api.client.post("/cleanup-stale")
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await resp.json())["error"]["message"] == "missing bearer token"
    resp = await api.client.post("/cleanup-stale", headers={"Authorization": "Bearer wrong"})
    assert resp.status == 401 and "invalid" in (await resp.json())["error"]["message"]
    assert api.coordinator.cleanup_calls == []

    resp = await api.client.post("/cleanup-stale", headers=api.auth)
    assert resp.status == 200 and (await resp.json())["count"] == 0
    resp = await api.client.post("/cleanup-stale", headers=api.auth, json={"older_than_s": 30})
    assert resp.status == 200
    assert api.coordinator.cleanup_calls == [None, 30.0]

    for bad in ({"older_than_s": -1}, {"older_than_s": "soon"}, {"older_than_s": True}, {"x": 1}):
        resp = await api.client.post("/cleanup-stale", headers=api.auth, json=bad)
        assert resp.status == 400, bad
        message = (await resp.json())["error"]["message"]
        assert "older_than_s" in message
    resp = await api.client.post("/cleanup-stale", headers=api.auth, data=b"{not json")
    assert resp.status == 400 and "JSON object" in (await resp.json())["error"]["message"]
    resp = await api.client.post("/cleanup-stale", headers=api.auth, json=[1, 2])
    assert resp.status == 400
    assert api.coordinator.cleanup_calls == [None, 30.0]


async def test_error_breakdown(api: Api) -> None:
    resp = await api.client.get("/error-breakdown")
    assert resp.status == 200
    assert (await resp.json())["by_category"] == {"network": 2}


async def test_breakers_list_and_reset(api: Api) -> None:
    api.breakers.get("ipfs").force_open()
    resp = await api.client.get("/circuit-breakers")
    body = await resp.json()
    assert set(body) == {"chain", "ipfs", "task_api"}
    assert body["ipfs"]["state"] == "forced_open"

    resp = await api.client.post("/circuit-breakers/ipfs/reset")
    assert resp.status == 401
    assert api.breakers.get("ipfs").state is BreakerState.FORCED_OPEN
    resp = await api.client.post("/circuit-breakers/ipfs/reset", headers=api.auth)
    assert resp.status == 200
    body = await resp.json()
    assert body["previous_state"] == "forced_open" and body["state"] == "closed"
    assert api.breakers.get("ipfs").state is BreakerState.CLOSED

    resp = await api.client.post("/circuit-breakers/bogus/reset", headers=api.auth)
    assert resp.status == 404
    assert "known: ['chain', 'ipfs', 'task_api']" in (await resp.json())["error"]["message"]
    assert "bogus" not in api.breakers.names()


async def test_health_ok_degraded_and_error(api: Api) -> None:
    resp = await api.client.get("/health")
    assert resp.status == 200 and (await resp.json())["status"] == "ok"
    api.breakers.get("chain").force_open()
    body = await (await api.client.get("/health")).json()
    assert body["status"] == "degraded" and body["breakers_open"] == ["chain"]
    api.coordinator.fail_with = unreachable()
    resp = await api.client.get("/health")
    assert resp.status == 503 and (await resp.json())["status"] == "error"


async def test_classified_errors_map_to_status_and_crashes_hide_traces(api: Api) -> None:
    api.coordinator.fail_with = unreachable()
    resp = await api.client.get("/stats")
    assert resp.status == 503
    err = (await resp.json())["error"]
    assert err["category"] == "network" and err["service"] == "chain"

    api.coordinator.fail_with = RuntimeError("secret internals password=hunter22")
    resp = await api.client.get("/stats")
    assert resp.status == 500
    text = await resp.text()
    assert "Traceback" not in text and "hunter22" not in text and "internals" not in text
    assert (await resp.json())["error"]["incident"]


async def test_unknown_route_and_wrong_method_are_json(api: Api) -> None:
    resp = await api.client.get("/nope")
    assert resp.status == 404 and "error" in await resp.json()
    resp = await api.client.put("/stats", headers=api.auth)
    assert resp.status == 405 and "GET" in resp.headers["Allow"]
    assert (await resp.json())["error"]["status"] == 405


async def test_foreign_host_header_is_refused(api: Api) -> None:
    resp = await api.client.get("/stats", headers={"Host": "evil.example:8780"})
    assert resp.status == 421
    assert "evil.example" in (await resp.json())["error"]["message"]
    resp = await api.client.get("/stats", headers={"Host": "localhost:8780"})
    assert resp.status == 200


@pytest.mark.parametrize(
    "path", ["/stats", "/transaction/tx-1", "/error-breakdown", "/circuit-breakers", "/metrics"]
)
async def test_protected_reads_need_the_token_but_health_does_not(path: str) -> None:
    api = await make_api(protect_reads=True)
    try:
        assert (await api.client.get(path)).status == 401
        assert (await api.client.get(path, headers=api.auth)).status == 200
        assert (await api.client.get("/health")).status == 200
    finally:
        await api.client.close()


async def test_unknown_transaction_raised_as_validation_error_is_404(api: Api) -> None:
    from r3mes_desktop.core.errors import ValidationError

    async def status(tx_id: str) -> None:
        raise ValidationError(f"transaction_id {tx_id!r} is not in the journal")

    api.coordinator.status = status  # type: ignore[method-assign]
    resp = await api.client.get("/transaction/abc")
    assert resp.status == 404
    assert "not in the journal" in (await resp.json())["error"]["message"]
