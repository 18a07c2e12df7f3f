"""GET /events streams bus events as SSE frames, filters by kind, and survives slow clients."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import ClientResponse

from r3mes_desktop.api import sse
from r3mes_desktop.core.events import Notice, StepProgress
from tests.unit.api.conftest import Api, make_api


async def _frames(resp: ClientResponse, count: int) -> list[tuple[str, dict[str, object]]]:
    frames: list[tuple[str, dict[str, object]]] = []
    kind = None
    async for raw in resp.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            kind = line[len("event: ") :]
        elif line.startswith("data: "):
            frames.append((str(kind), json.loads(line[len("data: ") :])))
            if len(frames) == count:
                return frames
    return frames


async def _connected(api: Api, path: str = "/events") -> ClientResponse:
    resp = await api.client.get(path)
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/event-stream"
    assert await resp.content.readline() == b": connected\n"
    assert await resp.content.readline() == b"\n"
    return resp


async def test_events_are_streamed_as_to_dict(api: Api) -> None:
    resp = await _connected(api)
    api.bus.publish(Notice(level="warning", message="low disk password=hunter22"))
    api.bus.publish(StepProgress(transaction_id="t", step="training", fraction=0.25))
    frames = await asyncio.wait_for(_frames(resp, 2), 5)
    assert frames[0][0] == "Notice" and frames[0][1]["level"] == "warning"
    assert "hunter22" not in json.dumps(frames[0][1])
    assert frames[1] == (
        "StepProgress",
        StepProgress(
            ts=frames[1][1]["ts"], transaction_id="t", step="training", fraction=0.25
        ).to_dict(),
    )
    resp.close()


async def test_kind_filter(api: Api) -> None:
    resp = await _connected(api, "/events?kinds=StepProgress")
    api.bus.publish(Notice(level="info", message="skip me"))
    api.bus.publish(StepProgress(transaction_id="t", step="pow", fraction=1.0))
    (frame,) = await asyncio.wait_for(_frames(resp, 1), 5)
    assert frame[0] == "StepProgress"
    resp.close()


async def test_slow_client_gets_a_dropped_count(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sse, "QUEUE_SIZE", 2)
    resp = await _connected(api)
    for i in range(5):  # published in one go: the handler cannot drain in between
        api.bus.publish(Notice(level="info", message=f"n{i}"))
    frames = await asyncio.wait_for(_frames(resp, 3), 5)
    assert frames[0] == ("dropped", {"count": 3})
    assert [f[1]["message"] for f in frames[1:]] == ["n3", "n4"]
    resp.close()


async def test_heartbeat_and_unsubscribe_on_disconnect() -> None:
    api = await make_api(heartbeat_s=0.05)
    try:
        resp = await _connected(api)
        assert await asyncio.wait_for(resp.content.readline(), 5) == b": heartbeat\n"
        before = len(api.bus._subscribers)
        resp.close()
        for _ in range(500):  # the next heartbeat write notices the closed socket
            if len(api.bus._subscribers) < before:
                break
            await asyncio.sleep(0.01)
        assert len(api.bus._subscribers) == before - 1
    finally:
        await api.client.close()
