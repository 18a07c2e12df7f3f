"""What the GUI and the headless miner both attach to an open Runtime: error detail files
for failed transactions, and the local monitoring API when enabled. No Qt.

    monitoring = await Monitoring.attach(runtime)          # after `await runtime.open()`
    ...
    await monitoring.close()                               # before `await runtime.close()`
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from r3mes_desktop.api import ApiConfig, ApiServer
from r3mes_desktop.api.governor_metrics import GovernorView
from r3mes_desktop.support.diagnostics import ErrorDetailRecorder

log = logging.getLogger(__name__)


class Monitoring:
    def __init__(self, recorder: ErrorDetailRecorder, api: ApiServer | None) -> None:
        self.recorder = recorder
        self.api = api

    @classmethod
    async def attach(
        cls, runtime: Any, *, api: bool | None = None, port: int | None = None
    ) -> Monitoring:
        """`api=None` follows settings.api_enabled; `port` overrides settings.api_port."""
        recorder = ErrorDetailRecorder(runtime.bus, lookup=runtime.coordinator.status)
        server = None
        config = ApiConfig.from_settings(runtime.settings)
        if api if api is not None else config.enabled:
            config = ApiConfig(
                enabled=True,
                host=config.host,
                port=config.port if port is None else port,
                protect_reads=config.protect_reads,
            )
            server = ApiServer(
                config,
                coordinator=runtime.coordinator,
                bus=runtime.bus,
                breakers=runtime.breakers,
                governor=governor_view(runtime),
            )
            try:
                await server.start()
            except OSError as exc:  # a busy port must not stop mining
                log.error("local API not started on %s:%s: %s", config.host, config.port, exc)
                server = None
        return cls(recorder, server)

    @property
    def api_url(self) -> str | None:
        return self.api.url if self.api is not None else None

    async def close(self) -> None:
        if self.api is not None:
            await self.api.stop()
            self.api = None
        await self.recorder.drain()
        self.recorder.close()


def governor_view(runtime: Any, *, gpus: Any = None) -> GovernorView:
    """/metrics' view of the governor on an open Runtime: its last decision (where the
    runtime keeps one; else the bus's GovernorStateChanged), its trainer pool's devices,
    and NVML for the GPUs (`gpus` overrides it; no bus: the governor's own GPU source is
    the one that tells the user NVML cannot be read)."""
    if gpus is None:
        from r3mes_desktop.adapters.governor.nvml import NvmlGpus

        gpus = NvmlGpus()

    def pool() -> Any:
        return getattr(runtime, "trainer", None)

    def devices() -> Mapping[str, bool]:
        members, enabled = getattr(pool(), "members", None), getattr(pool(), "enabled", None)
        if isinstance(members, Mapping) and enabled is not None:
            return {device: device in enabled for device in members}
        chosen = getattr(getattr(runtime, "settings", None), "mining_devices", ())
        return dict.fromkeys(chosen, True)

    def held() -> Mapping[str, str]:
        found = getattr(pool(), "held", None)
        return found if isinstance(found, Mapping) else {}

    return GovernorView(
        decision=(lambda: runtime.governor_decision)
        if hasattr(runtime, "governor_decision")
        else None,
        devices=devices,
        held=held,
        gpus=gpus,
        close=getattr(gpus, "close", None),
    )


async def export_runtime_diagnostics(runtime: Any, dest: Path) -> Path:
    """ "Export diagnostics" for an open Runtime (the GUI menu): the zip of
    `diagnostics.export_diagnostics` plus the live breakers, error analysis and recent
    transactions. Written in a thread; returns the zip's path."""
    from r3mes_desktop.api.protocol import plain
    from r3mes_desktop.support.diagnostics import export_diagnostics

    coordinator = runtime.coordinator
    extra: dict[str, Any] = {}
    stats: dict[str, Any] = {}
    try:
        stats = await coordinator.statistics()
        extra["error_analysis"] = await coordinator.error_analysis()
        extra["recent_transactions"] = plain(await coordinator.list_transactions(limit=50))
    except Exception as exc:  # the zip is most useful exactly when something is broken
        extra["coordinator_error"] = f"{type(exc).__name__}: {exc}"
    if runtime.breakers is not None:
        extra["circuit_breakers"] = plain(runtime.breakers.snapshot())
    settings = runtime.settings.model_dump(mode="json") if runtime.settings is not None else {}
    return await asyncio.to_thread(
        export_diagnostics, dest, settings=settings, stats=stats, extra=extra
    )
