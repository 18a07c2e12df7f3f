"""The aiohttp application: routes, JSON errors, token and host checks.

Endpoints mirror the CLI's debug commands (`/stats`, `/cleanup-stale`, `/error-breakdown`)
plus breakers, health, Prometheus metrics and an SSE event stream. Every failure becomes a
JSON body with a 4xx/5xx status: a client never sees a traceback.
"""

from __future__ import annotations

import logging
import math
import re
import time
import uuid
from typing import Any

from aiohttp import web

from r3mes_desktop.api.auth import Handler, auth_middleware
from r3mes_desktop.api.metrics import MinerMetrics
from r3mes_desktop.api.protocol import CoordinatorView, plain
from r3mes_desktop.api.sse import EventStream
from r3mes_desktop.core.errors import ErrorCategory, R3mesError, ValidationError
from r3mes_desktop.core.events import EventBus
from r3mes_desktop.core.resilience.breaker import BreakerRegistry
from r3mes_desktop.support.redact import redact

log = logging.getLogger(__name__)

COORDINATOR = web.AppKey("coordinator", object)
BREAKERS = web.AppKey("breakers", object)
METRICS = web.AppKey("metrics", MinerMetrics)
EVENTS = web.AppKey("events", EventStream)
STARTED = web.AppKey("started", float)

TX_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
MAX_STALE_S = 7 * 24 * 3600.0
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
_STATUS_OF: dict[ErrorCategory, int] = {
    ErrorCategory.VALIDATION: 400,
    ErrorCategory.AUTHENTICATION: 403,
    ErrorCategory.PERMANENT: 409,
    ErrorCategory.NETWORK: 503,
    ErrorCategory.RESOURCE: 503,
    ErrorCategory.UNKNOWN: 500,
}


def _error(status: int, message: str, **extra: Any) -> web.Response:
    body = {"error": {"status": status, "message": redact(message), **extra}}
    return web.json_response(body, status=status)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """HTTP errors and unexpected exceptions → JSON; the trace goes to the log only."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = _error(exc.status, exc.reason or exc.text or "error")
        for name in ("WWW-Authenticate", "Allow"):
            if name in exc.headers:
                response.headers[name] = exc.headers[name]
        return response
    except R3mesError as exc:
        status = _STATUS_OF[exc.category]
        log.warning("api %s %s failed: %s", request.method, request.path, exc)
        return _error(status, exc.message, category=exc.category.value, service=exc.service)
    except Exception:
        incident = uuid.uuid4().hex[:12]
        log.exception("api %s %s crashed (incident %s)", request.method, request.path, incident)
        return _error(500, "internal error; see the log", incident=incident)


def host_check(allowed: frozenset[str]) -> Any:
    """Reject requests whose Host is not ours (DNS-rebinding guard for loopback binds)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        host = (request.host or "").lower()
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if name not in allowed:
            raise web.HTTPMisdirectedRequest(reason=f"host {name!r} not served here")
        return await handler(request)

    return middleware


def _coordinator(request: web.Request) -> CoordinatorView:
    coordinator = request.app[COORDINATOR]
    if coordinator is None:
        raise web.HTTPServiceUnavailable(reason="coordinator not running")
    return coordinator  # type: ignore[return-value]


def _breakers(request: web.Request) -> BreakerRegistry | None:
    return request.app[BREAKERS]  # type: ignore[return-value]


async def get_stats(request: web.Request) -> web.Response:
    stats = plain(await _coordinator(request).statistics())
    return web.json_response({"atomic_coordinator": stats})


async def get_transaction(request: web.Request) -> web.Response:
    tx_id = request.match_info["tx_id"]
    if not TX_ID.fullmatch(tx_id):
        raise web.HTTPBadRequest(
            reason="transaction id: 1..128 characters of letters, digits and _.:-"
        )
    try:
        status = await _coordinator(request).status(tx_id)
    except ValidationError as exc:  # the id's shape was checked: unknown is all it can mean
        raise web.HTTPNotFound(reason=exc.message) from exc
    if status is None:
        raise web.HTTPNotFound(reason=f"no transaction {tx_id}")
    return web.json_response(plain(status))


async def _json_body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError as exc:
        raise web.HTTPBadRequest(reason="body must be a JSON object") from exc
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(reason="body must be a JSON object")
    return body


async def post_cleanup_stale(request: web.Request) -> web.Response:
    body = await _json_body(request)
    unknown = set(body) - {"older_than_s"}
    if unknown:
        raise web.HTTPBadRequest(
            reason=f"unknown field(s) {sorted(unknown)}; accepted: older_than_s"
        )
    raw = body.get("older_than_s", request.query.get("older_than_s"))
    older: float | None = None
    if raw is not None:
        try:
            older = float(raw)
        except (TypeError, ValueError):
            older = math.nan
        if isinstance(raw, bool) or not (0 < older <= MAX_STALE_S):
            raise web.HTTPBadRequest(
                reason=f"older_than_s must be a number in (0, {MAX_STALE_S:.0f}] seconds"
            )
    coordinator = _coordinator(request)
    report = await (
        coordinator.cleanup_stale(older_than_s=older)
        if older is not None
        else coordinator.cleanup_stale()
    )
    return web.json_response(plain(report))


async def get_error_breakdown(request: web.Request) -> web.Response:
    return web.json_response(plain(await _coordinator(request).error_analysis()))


async def get_breakers(request: web.Request) -> web.Response:
    registry = _breakers(request)
    snaps = registry.snapshot() if registry is not None else {}
    return web.json_response({name: plain(s) for name, s in snaps.items()})


async def post_breaker_reset(request: web.Request) -> web.Response:
    registry = _breakers(request)
    service = request.match_info["service"]
    names = registry.names() if registry is not None else []
    if registry is None or service not in names:
        raise web.HTTPNotFound(reason=f"no circuit breaker {service!r}; known: {sorted(names)}")
    breaker = registry.get(service)
    old = breaker.snapshot().state
    breaker.reset()
    log.info("circuit breaker %s reset via API (was %s)", service, old)
    return web.json_response(
        {"service": service, "previous_state": old, **plain(breaker.snapshot())}
    )


async def get_health(request: web.Request) -> web.Response:
    registry = _breakers(request)
    snaps = registry.snapshot() if registry is not None else {}
    unhealthy = sorted(n for n, s in snaps.items() if s.state in ("open", "forced_open"))
    body: dict[str, Any] = {
        "uptime_s": round(time.time() - request.app[STARTED], 3),
        "coordinator": request.app[COORDINATOR] is not None,
        "breakers_open": unhealthy,
    }
    status = 200
    if request.app[COORDINATOR] is None:
        body["status"], status = "starting", 503
    else:
        try:
            await request.app[COORDINATOR].statistics()  # type: ignore[attr-defined]
            body["status"] = "degraded" if unhealthy else "ok"
        except Exception as exc:
            body["status"], body["error"] = "error", redact(str(exc))
            status = 503
    return web.json_response(body, status=status)


async def get_metrics(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    coordinator = request.app[COORDINATOR]
    stats = plain(await coordinator.statistics()) if coordinator is not None else {}  # type: ignore[attr-defined]
    registry = _breakers(request)
    breakers = {n: plain(s) for n, s in (registry.snapshot() if registry else {}).items()}
    metrics.set_snapshot(stats=stats if isinstance(stats, dict) else {}, breakers=breakers)
    await metrics.refresh()
    body, content_type = metrics.negotiate(request.headers.get("Accept"))
    return web.Response(body=body, headers={"Content-Type": content_type, "Vary": "Accept"})


async def get_events(request: web.Request) -> web.StreamResponse:
    return await request.app[EVENTS].handle(request)


def create_app(
    *,
    coordinator: CoordinatorView | None,
    bus: EventBus,
    token: str,
    breakers: BreakerRegistry | None = None,
    metrics: MinerMetrics | None = None,
    protect_reads: bool = False,
    allowed_hosts: frozenset[str] | None = LOOPBACK_HOSTS,
    heartbeat_s: float = 15.0,
) -> web.Application:
    """Build the app. `allowed_hosts=None` disables the Host check (non-loopback binds)."""
    middlewares = [error_middleware]
    if allowed_hosts is not None:
        middlewares.append(host_check(allowed_hosts))
    middlewares.append(auth_middleware(token, protect_reads=protect_reads))
    app = web.Application(middlewares=middlewares, client_max_size=64 * 1024)
    app[COORDINATOR] = coordinator
    app[BREAKERS] = breakers
    owned_metrics = metrics is None
    app[METRICS] = metrics or MinerMetrics(bus)
    app[EVENTS] = EventStream(bus, heartbeat_s=heartbeat_s)
    app[STARTED] = time.time()

    async def on_shutdown(app: web.Application) -> None:
        app[EVENTS].close_all()
        if owned_metrics:
            app[METRICS].close()

    app.on_shutdown.append(on_shutdown)
    app.router.add_get("/stats", get_stats)
    app.router.add_get("/transaction/{tx_id}", get_transaction)
    app.router.add_post("/cleanup-stale", post_cleanup_stale)
    app.router.add_get("/error-breakdown", get_error_breakdown)
    app.router.add_get("/circuit-breakers", get_breakers)
    app.router.add_post("/circuit-breakers/{service}/reset", post_breaker_reset)
    app.router.add_get("/health", get_health)
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/events", get_events)
    return app
