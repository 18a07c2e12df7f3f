"""The API token: generated once, stored 0600, compared in constant time.

State-changing endpoints always need it; read endpoints only when configured. The token is
registered with the redactor so it can never appear in a log or a diagnostics zip.
"""

from __future__ import annotations

import hmac
import os
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from r3mes_desktop.redact import register_secret

TOKEN_FILE = "api_token"  # noqa: S105 - a file name, not a credential
OPEN_PATHS = frozenset({"/health"})
"""Readable without a token even when reads are protected: liveness probes carry none."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def load_or_create_token(directory: Path) -> str:
    """Read `<directory>/api_token`, creating it (0600, 256-bit urlsafe) if absent."""
    path = directory / TOKEN_FILE
    if path.exists():
        token = path.read_text(encoding="utf-8").strip()
        if len(token) >= 32:
            if os.name == "posix" and path.stat().st_mode & 0o077:
                os.chmod(path, 0o600)
            register_secret(token)
            return token
    directory.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(token + "\n")
    os.replace(path.with_suffix(".tmp"), path)
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
