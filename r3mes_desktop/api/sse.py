"""GET /events: the core's events as Server-Sent Events.

Each client gets a bounded queue fed by a bus subscription on the loop thread. A slow
client loses its oldest events (and is told how many, as a `dropped` event) instead of
growing memory or slowing the miner. A comment line is sent as a heartbeat so proxies and
clients notice dead connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from aiohttp import web

from r3mes_desktop.core.events import Event, EventBus
from r3mes_desktop.support.redact import redact

QUEUE_SIZE = 1000
_CLOSE = object()


class EventStream:
    """Fans bus events out to SSE clients."""

    def __init__(self, bus: EventBus, *, heartbeat_s: float = 15.0) -> None:
        if heartbeat_s <= 0:
            raise ValueError(f"heartbeat_s must be > 0, got {heartbeat_s}")
        self._bus = bus
        self._heartbeat_s = heartbeat_s
        self._queues: set[asyncio.Queue[Any]] = set()

    @property
    def clients(self) -> int:
        return len(self._queues)

    def close_all(self) -> None:
        """Ask every open stream to finish (app shutdown)."""
        for queue in list(self._queues):
            _put_dropping(queue, _CLOSE)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        kinds = {k for k in request.query.get("kinds", "").split(",") if k}
        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=QUEUE_SIZE)
        dropped = 0

        def on_event(event: Event) -> None:
            nonlocal dropped
            if kinds and event.kind not in kinds:
                return
            if _put_dropping(queue, event):
                dropped += 1

        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        self._queues.add(queue)
        unsubscribe = self._bus.subscribe(on_event)
        try:
            await response.write(b": connected\n\n")
            while True:
                try:
                    async with asyncio.timeout(self._heartbeat_s):
                        item = await queue.get()
                except TimeoutError:
                    await response.write(b": heartbeat\n\n")
                    continue
                if item is _CLOSE:
                    break
                if dropped:
                    await response.write(_frame("dropped", {"count": dropped}))
                    dropped = 0
                await response.write(_frame(item.kind, item.to_dict()))
        except ConnectionResetError:  # the client went away: nothing to finish
            return response
        finally:
            unsubscribe()
            self._queues.discard(queue)
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response


def _put_dropping(queue: asyncio.Queue[Any], item: Any) -> bool:
    """Put `item`, dropping the oldest entry if full; True if something was dropped."""
    try:
        queue.put_nowait(item)
        return False
    except asyncio.QueueFull:
        with contextlib.suppress(asyncio.QueueEmpty):
            queue.get_nowait()
        queue.put_nowait(item)
        return True


def _frame(kind: str, data: dict[str, Any]) -> bytes:
    payload = redact(json.dumps(data, default=str, separators=(",", ":")))
    return f"event: {kind}\ndata: {payload}\n\n".encode()
