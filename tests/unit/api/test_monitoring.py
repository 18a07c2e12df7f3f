"""Monitoring.attach: error files for failed transactions and the API on a free port."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import aiohttp

from r3mes_desktop.api.monitoring import Monitoring
from r3mes_desktop.core.errors import PermanentError
from r3mes_desktop.support import diagnostics
from r3mes_desktop.support.config import Settings
from tests.helpers.coordinator_rig import make_rig
from tests.helpers.fakes import make_spec


async def test_attach_serves_the_api_and_records_failures(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    runtime = SimpleNamespace(
        bus=rig.bus,
        coordinator=rig.coordinator,
        breakers=rig.coordinator.breakers,
        settings=Settings(api_enabled=True),
    )
    await rig.coordinator.start(background=False)
    monitoring = await Monitoring.attach(runtime, port=0)
    try:
        assert monitoring.api_url is not None and monitoring.api_url.startswith("http://127.0.0.1:")
        rig.faults.fail("add_and_pin", PermanentError("model gone"), times=None)
        failed = await rig.coordinator.run_transaction(make_spec(5))
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{monitoring.api_url}/transaction/{failed.transaction_id}") as r,
        ):
            assert (await r.json())["state"] in ("failed", "rolled_back")
    finally:
        await monitoring.close()
        await rig.coordinator.close()
    (path,) = diagnostics.error_files()
    assert failed.transaction_id in path.name
    assert "model gone" in path.read_text()


async def test_api_off_by_default(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    runtime = SimpleNamespace(
        bus=rig.bus,
        coordinator=rig.coordinator,
        breakers=rig.coordinator.breakers,
        settings=Settings(),
    )
    monitoring = await Monitoring.attach(runtime)
    assert monitoring.api is None and monitoring.api_url is None
    await monitoring.close()


async def test_export_runtime_diagnostics(tmp_path: Path) -> None:
    import zipfile

    from r3mes_desktop.api.monitoring import export_runtime_diagnostics

    rig = make_rig(tmp_path)
    runtime = SimpleNamespace(
        bus=rig.bus,
        coordinator=rig.coordinator,
        breakers=rig.coordinator.breakers,
        settings=Settings(),
    )
    await rig.coordinator.start(background=False)
    try:
        await rig.coordinator.run_transaction(make_spec(1))
        path = await export_runtime_diagnostics(runtime, tmp_path / "out")
    finally:
        await rig.coordinator.close()
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
    assert {
        "settings.json",
        "stats.json",
        "circuit_breakers.json",
        "error_analysis.json",
        "recent_transactions.json",
    } <= names
