"""The server binds loopback by default, warns on anything else, and keeps its token 0600."""

from __future__ import annotations

import logging
from pathlib import Path

import aiohttp
import pytest

from r3mes_desktop.api import ApiConfig, ApiServer, load_or_create_token
from r3mes_desktop.api.server import warn_if_exposed
from r3mes_desktop.core.events import EventBus
from r3mes_desktop.support.config import paths
from r3mes_desktop.support.redact import SECRETS, redact
from r3mes_desktop.support.secrets import API_TOKEN, SecretsStore
from tests.helpers.monitoring_fakes import FakeCoordinatorView


@pytest.fixture(autouse=True)
def _forget() -> None:
    yield
    SECRETS.forget_all()


def test_token_is_created_private_stable_and_redacted(tmp_path: Path) -> None:
    store = SecretsStore(tmp_path / "secrets.json")
    token = load_or_create_token(store)
    assert (store.path.stat().st_mode & 0o777) == 0o600
    assert len(token) >= 43
    assert load_or_create_token(SecretsStore(store.path)) == token
    assert token not in redact(f"header was {token}")
    store.set(API_TOKEN, "short")
    assert load_or_create_token(store) != "short"


def test_default_store_lives_in_the_data_dir() -> None:
    token = load_or_create_token()
    assert SecretsStore(paths().secrets_file).get(API_TOKEN) == token
    assert paths().secrets_file.parent == paths().data_dir


def test_config_from_settings() -> None:
    from r3mes_desktop.support.config import Settings

    config = ApiConfig.from_settings(Settings(api_enabled=True, api_port=9100))
    assert config == ApiConfig(enabled=True, host="127.0.0.1", port=9100)
    assert ApiConfig.from_settings(Settings(api_protect_reads=True)).protect_reads


def test_config_defaults_and_validation() -> None:
    config = ApiConfig()
    assert config.host == "127.0.0.1" and config.loopback and not config.enabled
    assert ApiConfig(host="::1").loopback and ApiConfig(host="localhost").loopback
    assert not ApiConfig(host="0.0.0.0").loopback
    with pytest.raises(ValueError, match=r"api.port must be in 0..65535"):
        ApiConfig(port=70000)
    with pytest.raises(ValueError, match="heartbeat_s"):
        ApiConfig(heartbeat_s=0)


async def test_default_server_listens_on_loopback_only() -> None:
    server = ApiServer(
        ApiConfig(enabled=True, port=0),
        coordinator=FakeCoordinatorView(),
        bus=EventBus(),
        token="x" * 43,
    )
    await server.start()
    try:
        assert server.url.startswith("http://127.0.0.1:")
        assert server.addresses == ["127.0.0.1"]
        async with aiohttp.ClientSession() as session:
            async with session.get(server.url + "/health") as resp:
                assert resp.status == 200
            async with session.post(
                server.url + "/cleanup-stale", headers={"Authorization": f"Bearer {server.token}"}
            ) as resp:
                assert resp.status == 200
    finally:
        await server.stop()


def test_non_loopback_bind_is_logged_as_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    # Tests never bind beyond 127.0.0.1: the policy is checked without listening.
    with caplog.at_level(logging.WARNING):
        assert not warn_if_exposed(ApiConfig(host="127.0.0.1"))
        assert not caplog.records
        assert warn_if_exposed(ApiConfig(host="192.168.1.20"))
    (record,) = caplog.records
    assert "not loopback" in record.getMessage() and "do NOT need" in record.getMessage()


def test_exposed_server_drops_the_loopback_host_check() -> None:
    exposed = ApiServer(ApiConfig(host="192.168.1.20"), coordinator=None, bus=EventBus())
    local = ApiServer(ApiConfig(), coordinator=None, bus=EventBus())
    assert len(exposed.app.middlewares) == len(local.app.middlewares) - 1
    assert exposed.token == local.token  # both from the secrets store
