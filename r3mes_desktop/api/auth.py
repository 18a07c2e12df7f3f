"""The API token: generated once, kept in the secrets store (0600), compared in constant time.

State-changing endpoints always need it; read endpoints only when configured. The token is
registered with the redactor so it can never appear in a log or a diagnostics zip.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from r3mes_desktop.support.redact import register_secret
from r3mes_desktop.support.secrets import API_TOKEN, SecretsStore

MIN_TOKEN_LEN = 32
OPEN_PATHS = frozenset({"/health"})
"""Readable without a token even when reads are protected: liveness probes carry none."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def load_or_create_token(store: SecretsStore | None = None) -> str:
    """The API token from the secrets store (0600 file or keyring), created on first use."""
    store = store or SecretsStore()
    token = store.get(API_TOKEN)
    if token is None or len(token) < MIN_TOKEN_LEN:
        token = secrets.token_urlsafe(32)
        store.set(API_TOKEN, token)
    register_secret(token)
    return token


def bearer_of(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def auth_middleware(token: str, *, protect_reads: bool) -> Any:
    """Require `Authorization: Bearer <token>` for writes (and reads if `protect_reads`)."""
    expected = token.encode()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        is_read = request.method in ("GET", "HEAD", "OPTIONS")
        needs = (not is_read) or (protect_reads and request.path not in OPEN_PATHS)
        if needs:
            given = bearer_of(request)
            if given is None:
                raise web.HTTPUnauthorized(
                    reason="missing bearer token", headers={"WWW-Authenticate": "Bearer"}
                )
            if not hmac.compare_digest(given.encode(), expected):
                raise web.HTTPUnauthorized(
                    reason="invalid bearer token",
                    headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
                )
        return await handler(request)

    return middleware
