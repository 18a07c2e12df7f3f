"""Starting and stopping the API on the running event loop (GUI's qasync loop or the CLI's).

Loopback is the default; any other address must be asked for explicitly and is logged as a
warning, because the read endpoints then tell the network what this machine mines.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from r3mes_desktop.api.app import LOOPBACK_HOSTS, create_app
from r3mes_desktop.api.auth import load_or_create_token
from r3mes_desktop.api.governor_metrics import GovernorView
from r3mes_desktop.api.metrics import MinerMetrics
from r3mes_desktop.api.protocol import CoordinatorView
from r3mes_desktop.core.events import EventBus
from r3mes_desktop.core.resilience.breaker import BreakerRegistry

log = logging.getLogger(__name__)

DEFAULT_PORT = 8780


@dataclass(frozen=True)
class ApiConfig:
    """The API's settings (mirrors the `api` section of the app settings)."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    protect_reads: bool = False
    heartbeat_s: float = 15.0

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"api.port must be in 0..65535 (0 = any free port), got {self.port}")
        if self.heartbeat_s <= 0:
            raise ValueError(f"api.heartbeat_s must be > 0, got {self.heartbeat_s}")
        if not self.host:
            raise ValueError("api.host must be an address, e.g. 127.0.0.1")

    @classmethod
    def from_settings(cls, settings: Any) -> ApiConfig:
        """From `config.Settings` (api_enabled, api_host, api_port, api_protect_reads)."""
        return cls(
            enabled=bool(settings.api_enabled),
            host=str(settings.api_host),
            port=int(settings.api_port),
            protect_reads=bool(settings.api_protect_reads),
        )

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def warn_if_exposed(config: ApiConfig) -> bool:
    """Log a warning when the API is reachable from other machines; True if it is."""
    if config.loopback:
        return False
    log.warning(
        "local API bound to %s (not loopback): other machines can reach it; reads %s a token",
        config.host,
        "need" if config.protect_reads else "do NOT need",
    )
    return True


class ApiServer:
    """One running API: `await start()`, `url`, `await stop()`."""

    def __init__(
        self,
        config: ApiConfig,
        *,
        coordinator: CoordinatorView | None,
        bus: EventBus,
        token: str | None = None,
        breakers: BreakerRegistry | None = None,
        metrics: MinerMetrics | None = None,
        governor: GovernorView | None = None,
    ) -> None:
        """`governor`: where /metrics reads the resource governor (with `metrics` given,
        that object's own view applies)."""
        self.config = config
        self.token = token if token is not None else load_or_create_token()
        self.metrics = metrics or MinerMetrics(bus, governor=governor)
        self.app = create_app(
            coordinator=coordinator,
            bus=bus,
            token=self.token,
            breakers=breakers,
            metrics=self.metrics,
            protect_reads=config.protect_reads,
            allowed_hosts=LOOPBACK_HOSTS if config.loopback else None,
            heartbeat_s=config.heartbeat_s,
        )
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("API server not started")
        host = f"[{self.config.host}]" if ":" in self.config.host else self.config.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        warn_if_exposed(self.config)
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, self.config.host, self.config.port, reuse_address=True)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])  # the real port when config.port is 0
        log.info("local API listening on %s", self.url)

    @property
    def addresses(self) -> list[str]:
        """The socket addresses actually bound (host part only)."""
        return [str(a[0]) for a in self._runner.addresses] if self._runner else []

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.metrics.close()
