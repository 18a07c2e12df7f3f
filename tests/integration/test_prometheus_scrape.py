"""A real Prometheus (Debian's `prometheus` package) scrapes a fresh miner's API with the
shipped scrape config and rules: bearer token, OpenMetrics, the first failure in increase().

Skipped, with the reason, where the prometheus binary is not installed.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from r3mes_desktop.api.app import create_app
from r3mes_desktop.core.events import EventBus, TransactionStateChanged
from r3mes_desktop.core.resilience.breaker import BreakerRegistry
from tests.integration.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = shutil.which("prometheus")
TOKEN = "p" * 43

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(
        PROMETHEUS is None,
        reason="prometheus not installed: apt-get install prometheus (Debian) to run it",
    ),
]


def _config(target: str, token_file: Path) -> str:
    """packaging/prometheus.yml with this test's target, its token enabled, 1 s intervals."""
    text = (ROOT / "packaging" / "prometheus.yml").read_text()
    swaps = {
        '"rig-01.lan:8080", "rig-02.lan:8080", "rig-03.lan:8080"': f'"{target}"',
        "scrape_interval: 15s": "scrape_interval: 1s",
        "evaluation_interval: 30s": "evaluation_interval: 1s",
        "    # authorization:\n    #   type: Bearer\n": "    authorization:\n      type: Bearer\n",
        "    #   credentials_file: /etc/prometheus/r3mes-token": (
            f"      credentials_file: {token_file}"
        ),
    }
    for old, new in swaps.items():
        assert old in text, f"packaging/prometheus.yml no longer has {old!r}"
        text = text.replace(old, new)
    return text


@pytest.fixture
def prometheus_dir(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "packaging" / "r3mes-alerts.yml", tmp_path / "r3mes-alerts.yml")
    (tmp_path / "token").write_text(TOKEN)
    return tmp_path


@pytest.fixture
def prometheus_port() -> int:
    return free_port()


@pytest.fixture
def miner_port() -> int:
    return free_port()


@pytest.fixture
def prometheus(prometheus_dir: Path, prometheus_port: int, miner_port: int) -> Iterator[str]:
    """URL of a Prometheus on 127.0.0.1 scraping 127.0.0.1:<miner_port>; stopped after."""
    assert PROMETHEUS is not None
    config = prometheus_dir / "prometheus.yml"
    config.write_text(_config(f"127.0.0.1:{miner_port}", prometheus_dir / "token"))
    log = (prometheus_dir / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={prometheus_dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{prometheus_port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield f"http://127.0.0.1:{prometheus_port}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        log.close()


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


async def _api(base: str, path: str, **query: str) -> Any:
    url = f"{base}{path}?{urllib.parse.urlencode(query)}" if query else f"{base}{path}"
    for _ in range(100):
        try:
            return await asyncio.to_thread(_get, url)
        except OSError:
            await asyncio.sleep(0.2)  # Prometheus still starting: polling its readiness
    raise AssertionError(f"Prometheus did not answer {url}")


async def _until(what: str, check: Any, *, limit_s: float = 30.0) -> Any:
    """Poll `check()` (async) until it returns something truthy; Prometheus works in ticks."""
    deadline = asyncio.get_running_loop().time() + limit_s
    while asyncio.get_running_loop().time() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.5)
    raise AssertionError(f"Prometheus never showed {what} in {limit_s:.0f}s")


@pytest.mark.timeout(120)
async def test_prometheus_scrapes_a_fresh_miner_and_sees_its_first_failure(
    prometheus: str, miner_port: int, prometheus_dir: Path
) -> None:
    bus = EventBus()
    app = create_app(
        coordinator=None, bus=bus, token=TOKEN, breakers=BreakerRegistry(), protect_reads=True
    )
    served: list[str] = []

    async def record(request: web.Request, response: web.StreamResponse) -> None:
        if request.path == "/metrics":
            served.append(f"{response.status} {response.headers.get('Content-Type')}")

    app.on_response_prepare.append(record)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", miner_port).start()
    series = 'r3mes_transaction_failures_total{category="network", step="ipfs_upload"}'
    try:

        async def up() -> bool:
            found = await _api(prometheus, "/api/v1/targets")
            targets = found["data"]["activeTargets"]
            return bool(targets) and targets[0]["health"] == "up"

        async def zero_scraped() -> bool:
            found = await _api(prometheus, "/api/v1/query", query=series)
            return [r["value"][1] for r in found["data"]["result"]] == ["0"]

        await _until("the rig up (token accepted)", up)
        await _until("the failure series at 0 before any failure", zero_scraped)
        bus.publish(
            TransactionStateChanged(
                transaction_id="t1",
                round_id=1,
                old_state="ipfs_upload",
                new_state="failed",
                failed_step="ipfs_upload",
                error_category="network",
            )
        )

        async def first_failure_counted() -> float:
            found = await _api(prometheus, "/api/v1/query", query=f"increase({series}[1m])")
            values = [float(r["value"][1]) for r in found["data"]["result"]]
            return values[0] if values and values[0] >= 1 else 0.0

        assert await _until("increase() >= 1 after the first failure", first_failure_counted)

        rules = await _api(prometheus, "/api/v1/rules")
        health = {r["name"]: r["health"] for g in rules["data"]["groups"] for r in g["rules"]}
        assert health == dict.fromkeys(
            [
                "R3mesMinerDown",
                "R3mesBreakerOpen",
                "R3mesFailures",
                "R3mesNoCommits",
                "R3mesGovernorHeld",
            ],
            "ok",
        ), rules
    finally:
        await runner.cleanup()

    assert served, "Prometheus never scraped"
    assert all(s.startswith("200 application/openmetrics-text; version=1.0.0") for s in served), (
        served
    )
