"""Joining a network in one step: read its network file, run the pre-flight, write settings.

`r3mes-miner join FILE|URL` and Settings → Network → "Join a network…" both start here. The
file comes from a path or over https (http only from 127.0.0.1, where nobody can tamper
with it on the way), capped at `MAX_NETWORK_FILE_BYTES`, and every field is checked on load
with an error that names it (`support.network_file`). Settings are written only when every
required check passed (or the caller forces it), all at once, and the result says exactly
what was written and which of it the environment overrides.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from r3mes_desktop.app.preflight import Check, Target, preflight, required_passed
from r3mes_desktop.support.config import Settings, env_overrides, save_settings, updated
from r3mes_desktop.support.network_file import NetworkFile, NetworkFileError

MAX_NETWORK_FILE_BYTES = 64 * 1024
"""A network file is a few hundred bytes; anything near this is not one."""
_LOOPBACK = frozenset({"127.0.0.1"})


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def _checked_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and parts.hostname in _LOOPBACK:
        return url
    raise NetworkFileError(
        f"network file URL: expected https:// (http:// only for 127.0.0.1), got {url!r}"
    )


async def fetch_network_file(
    url: str, *, timeout_s: float = 10.0, max_bytes: int = MAX_NETWORK_FILE_BYTES
) -> NetworkFile:
    """Download and check a network file. No redirects: a redirect could lead from https to
    http or another host, so the URL given is the only one read."""
    import aiohttp

    _checked_url(url)
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session,
            session.get(url, allow_redirects=False) as response,
        ):
            if response.status != 200:
                raise NetworkFileError(f"{url}: HTTP {response.status}, expected 200")
            body = await response.content.read(max_bytes + 1)
    except NetworkFileError:
        raise
    except TimeoutError:
        raise NetworkFileError(f"{url}: no answer within {timeout_s:g} s") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise NetworkFileError(f"{url}: cannot download ({type(exc).__name__}: {exc})") from None
    if len(body) > max_bytes:
        raise NetworkFileError(f"{url}: larger than {max_bytes} bytes: not a network file")
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise NetworkFileError(f"{url}: not JSON ({exc})") from None
    return NetworkFile.from_json(data)


async def load_network(source: str, *, timeout_s: float = 10.0) -> NetworkFile:
    """The network file at a path or URL (NetworkFileError naming the field or the problem)."""
    if is_url(source):
        return await fetch_network_file(source, timeout_s=timeout_s)
    return await asyncio.to_thread(_read_file, source)


def _read_file(source: str) -> NetworkFile:
    path = Path(source).expanduser()
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise NetworkFileError(f"{path}: cannot read ({exc.strerror})") from None
    if size > MAX_NETWORK_FILE_BYTES:
        raise NetworkFileError(
            f"{path}: larger than {MAX_NETWORK_FILE_BYTES} bytes: not a network file"
        )
    return NetworkFile.load(path)


def network_settings(network: NetworkFile) -> dict[str, Any]:
    """The settings a network file fills, its name included."""
    return {**network.settings(), "network_name": network.name}


@dataclass(frozen=True)
class JoinResult:
    network: NetworkFile
    checks: list[Check]
    written: dict[str, Any] = field(default_factory=dict)  # empty: nothing was written
    path: Path | None = None
    overridden: dict[str, str] = field(default_factory=dict)  # field -> the env var set now

    @property
    def joined(self) -> bool:
        return self.path is not None


async def join(
    source: str,
    *,
    settings: Settings,
    account: str | None,
    force: bool = False,
    timeout_s: float = 5.0,
    save: Callable[[Settings], Path] = save_settings,
    check: Callable[..., Any] = preflight,
) -> JoinResult:
    """Load `source`, run the pre-flight on it, and write its settings if every required
    check passed (or `force`). Raises NetworkFileError for a file that cannot be used and
    SettingsError if the values do not make valid settings; writes nothing then."""
    network = await load_network(source, timeout_s=max(timeout_s, 10.0))
    values = network_settings(network)
    new = updated(settings, **values)  # validated before anything is checked or written
    checks: list[Check] = await check(
        Target.from_network(network, account=account), timeout_s=timeout_s
    )
    if not (required_passed(checks) or force):
        return JoinResult(network=network, checks=checks)
    path = await asyncio.to_thread(save, new)
    locked = env_overrides()
    return JoinResult(
        network=network,
        checks=checks,
        written=_shown(values),
        path=path,
        overridden={name: locked[name] for name in values if name in locked},
    )


def _shown(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
