"""Settings: precedence, every validation error, all-or-nothing updates, atomic save, paths."""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path
from typing import Any

import pytest

from r3mes_desktop.core.resilience.breaker import BreakerRegistry
from r3mes_desktop.core.resilience.retry import RetryPolicy
from r3mes_desktop.support.config import (
    FIELD_NAMES,
    Settings,
    SettingsError,
    env_overrides,
    load_settings,
    paths,
    save_settings,
    updated,
    validate_candidate,
    write_atomic,
)


def write_toml(text: str) -> Path:
    target = paths().settings_file
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, "utf-8")
    return target


def test_defaults_are_the_seeds_values() -> None:
    s = load_settings()
    assert (
        s.transaction_timeout,
        s.max_retries,
        s.retry_initial_delay,
        s.retry_max_delay,
        s.retry_backoff_factor,
        s.max_gradient_size_mb,
        s.max_active_transactions,
        s.pow_difficulty,
    ) == (300, 3, 1.0, 60.0, 2.0, 100, 10, 20)
    assert s.uses_devnet and s.chain_rpc_urls == () and s.ipfs_api_address == ""
    assert s.api_host == "127.0.0.1" and not s.api_enabled
    assert s.fault_plan is None and s.mining_devices == ()


def test_precedence_defaults_then_toml_then_env(monkeypatch: pytest.MonkeyPatch) -> None:
    write_toml("pow_difficulty = 24\nmax_retries = 5\nchain_rpc_urls = ['http://127.0.0.1:8545']\n")
    s = load_settings()
    assert (s.pow_difficulty, s.max_retries, s.max_active_transactions) == (24, 5, 10)
    assert s.chain_rpc_urls == ("http://127.0.0.1:8545",) and not s.uses_devnet
    monkeypatch.setenv("R3MES_POW_DIFFICULTY", "28")
    s = load_settings()
    assert (s.pow_difficulty, s.max_retries) == (28, 5)


def test_explicit_path_and_ignoring_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / "rig2.toml"
    other.write_text("max_active_transactions = 2\n")
    monkeypatch.setenv("R3MES_MAX_ACTIVE_TRANSACTIONS", "7")
    assert load_settings(other).max_active_transactions == 7
    assert load_settings(other, use_env=False).max_active_transactions == 2


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("http://a:8545, https://b/rpc", ("http://a:8545", "https://b/rpc")),
        ('["ws://a:8546", "http://b"]', ("ws://a:8546", "http://b")),
        ("", ()),
    ],
)
def test_env_lists(monkeypatch: pytest.MonkeyPatch, raw: str, expected: tuple[str, ...]) -> None:
    monkeypatch.setenv("R3MES_CHAIN_RPC_URLS", raw)
    assert load_settings().chain_rpc_urls == expected


def test_env_values_are_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {
        "R3MES_TRANSACTION_TIMEOUT": "120",
        "R3MES_RETRY_INITIAL_DELAY": "0.5",
        "R3MES_RETRY_MAX_DELAY": "30",
        "R3MES_RETRY_BACKOFF_FACTOR": "3",
        "R3MES_MAX_GRADIENT_SIZE_MB": "50",
        "R3MES_API_ENABLED": "true",
        "R3MES_MINING_DEVICES": "CUDA:1, cuda:0",
        "R3MES_CHAIN_ID": "",
        "R3MES_EMAIL_TO": "a@x.org,b@y.org",
    }.items():
        monkeypatch.setenv(key, value)
    s = load_settings()
    assert (s.transaction_timeout, s.retry_initial_delay, s.retry_max_delay) == (120, 0.5, 30)
    assert (s.retry_backoff_factor, s.max_gradient_size_mb, s.api_enabled) == (3, 50, True)
    assert s.mining_devices == ("cuda:1", "cuda:0") and s.chain_id is None
    assert s.email_to == ("a@x.org", "b@y.org")


# Every field with a rule: a bad value and the exact "accepted" text it must report.
INVALID: list[tuple[str, Any, str, str]] = [
    ("transaction_timeout", 5, "out of range", "10–86400 seconds"),
    ("transaction_timeout", "soon", "invalid", "10–86400 seconds"),
    ("max_retries", 21, "out of range", "0–20"),
    ("max_retries", -1, "out of range", "0–20"),
    ("retry_initial_delay", -0.1, "out of range", "0–3600 seconds"),
    ("retry_max_delay", 4000, "out of range", "0–3600 seconds"),
    ("retry_max_delay", 0.5, "must be ≥ retry_initial_delay = 1", "0–3600 seconds"),
    ("retry_backoff_factor", 0.5, "out of range", "1–10"),
    ("retry_wait", "random", "invalid", "exponential, linear, fixed or fibonacci"),
    ("retry_jitter", "maybe", "invalid", "true or false"),
    ("max_gradient_size_mb", 0, "out of range", "1–10240 MB"),
    ("max_active_transactions", 101, "out of range", "1–100"),
    ("pow_difficulty", 40, "out of range", "16–32"),
    ("pow_difficulty", 15, "out of range", "16–32"),
    ("stale_threshold", 10, "out of range", "60–604800 seconds"),
    ("call_timeout", 0, "out of range", "1–3600 seconds"),
    ("chain_rpc_urls", ["ftp://a"], "not an http(s):// or ws(s):// URL", "a list of http(s)://"),
    ("chain_id", 0, "out of range", "a positive integer or empty"),
    ("ipfs_api_address", "localhost:5001", "not a multiaddr or URL", "a multiaddr"),
    ("contract_address", "0x1234", "not a contract address", "0x followed by 40 hex digits"),
    ("mining_devices", ["gpu"], "unknown device 'gpu'", "a list of devices (cpu, cuda:N, mps)"),
    ("mining_devices", ["cpu", "cuda:0"], "the CPU mines alone", "a list of devices"),
    ("mining_devices", ["cuda:0", "cuda:0"], "a device is listed twice", "a list of devices"),
    ("training_threads", 257, "out of range", "0 = all cores but one, or 1–256 threads"),
    ("pow_threads", -1, "out of range", "0 = auto (all cores on a CPU rig, the cores GPUs leave)"),
    ("process_priority", "high", "invalid", "normal, low or idle"),
    ("memory_budget_mb", 100, "must be 0 (none) or at least 256 MB", "0 = no budget"),
    ("gpu_vram_cap_mb", 10, "must be 0 (none) or at least 256 MB", "0 = no cap"),
    ("gpu_power_target_w", 5, "must be 0 (off) or 30–1500 W", "0 = off, or 30–1500 W"),
    ("model_preset", "huge", "invalid", "tiny, default or large"),
    ("checkpoint_interval", 0, "out of range", "1–100000 steps"),
    ("breaker_window_size", 0, "out of range", "1–1000 calls"),
    ("breaker_failure_threshold", 11, "must be ≤ breaker_window_size = 10", "1–1000 failures"),
    ("breaker_open_timeout", 0.5, "out of range", "1–3600 seconds"),
    ("breaker_half_open_max_calls", 0, "out of range", "1–100"),
    ("breaker_success_threshold", 101, "out of range", "1–100"),
    ("api_enabled", "sometimes", "invalid", "true or false"),
    (
        "api_host",
        "example.com",
        "does not appear to be an IPv4 or IPv6",
        "an IP address or localhost",
    ),
    ("api_port", 80, "out of range", "1024–65535"),
    ("notify_tray", "perhaps", "invalid", "true or false"),
    ("notify_min_severity", "debug", "invalid", "info, warning or error"),
    ("verdict_overdue_blocks", 0, "out of range", "1–1000000 blocks"),
    ("slack_enabled", 3, "invalid", "true or false"),
    ("api_protect_reads", "x", "invalid", "true or false"),
    ("email_enabled", "x", "invalid", "true or false"),
    ("smtp_port", 70000, "out of range", "1–65535"),
    ("smtp_starttls", "x", "invalid", "true or false"),
    ("email_from", "nobody", "not an e-mail address", "an e-mail address"),
    ("email_to", ["a@x.org", "bad"], "not an e-mail address", "a list of e-mail addresses"),
    ("fault_plan", "/nonexistent/plan.toml", "no such file", "the path of an existing fault plan"),
    ("network_name", "n" * 101, "invalid", "up to 100 characters"),
    ("governor_idle_minutes", 1441, "out of range", "0–1440 minutes without input"),
    ("governor_not_on_battery", "x", "invalid", "true or false"),
    ("governor_battery_floor", 101, "out of range", "0–100 % on battery; 0 = no floor"),
    ("governor_max_other_cpu", 0, "out of range", "1–100 % of the CPU used by other"),
    ("governor_pause_while", ["steam", " "], "program names must be", "a list of program"),
    ("governor_windows", ["sat:9-17"], "expected DAY:HH:MM-HH:MM", "a list of DAY:HH:MM"),
    ("governor_gpu_temp_limit", 30, "must be 0 (off) or 40–100", "0 = off, or 40–100 °C"),
    ("governor_gpu_temp_limit", 101, "out of range", "0 = off, or 40–100 °C"),
    ("governor_gpu_temp_delta", 0.5, "out of range", "1–30 °C below the limit"),
    ("start_at_login", "sometimes", "invalid", "true or false"),
    ("model_cache_mb", 8, "out of range", "16–1048576 MB"),
]


def test_every_rule_is_covered() -> None:
    ruled = {field for field, *_ in INVALID}
    free_text = {"smtp_username", "smtp_host"}  # any text (smtp_host: see email rules)
    assert set(FIELD_NAMES) - ruled - free_text == set()


@pytest.mark.parametrize(("field", "value", "problem", "accepted"), INVALID)
def test_each_invalid_value_names_field_value_and_range(
    field: str, value: Any, problem: str, accepted: str
) -> None:
    errors = validate_candidate({field: value})
    assert list(errors) == [field]
    message = errors[field]
    env = "R3MES_" + field.upper()
    assert message.startswith(f"{field} ({env}) = ")
    assert problem in message
    assert f": accepted {accepted}" in message
    shown = value[-1] if isinstance(value, list) else value
    assert str(shown) in message


def test_env_error_message_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("R3MES_POW_DIFFICULTY", "40")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert info.value.errors == {
        "pow_difficulty": "pow_difficulty (R3MES_POW_DIFFICULTY) = 40 is out of range: "
        "accepted 16–32"
    }


def test_all_errors_are_collected_from_all_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    write_toml("max_retries = 99\nmining_devices = ['tpu']\n")
    monkeypatch.setenv("R3MES_POW_DIFFICULTY", "12")
    monkeypatch.setenv("R3MES_API_PORT", "http")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert set(info.value.errors) == {
        "max_retries",
        "mining_devices",
        "pow_difficulty",
        "api_port",
    }
    assert all(m in str(info.value) for m in info.value.errors.values())


def test_email_requires_its_fields_together() -> None:
    errors = validate_candidate({"email_enabled": True})
    assert set(errors) == {"smtp_host", "email_from", "email_to"}
    assert "required when email_enabled is true" in errors["smtp_host"]
    ok = {"email_enabled": True, "smtp_host": "mail", "email_from": "a@b.c", "email_to": ["d@e.f"]}
    assert validate_candidate(ok) == {}


def test_urls_in_messages_lose_path_and_credentials() -> None:
    errors = validate_candidate({"chain_rpc_urls": ["https://user:pw@node.io/v3/KEY123", "bad"]})
    message = errors["chain_rpc_urls"]
    assert "KEY123" not in message and "pw" not in message
    assert "https://node.io/…" in message


def test_unknown_and_secret_keys_in_the_file_are_rejected() -> None:
    write_toml('pow_dificulty = 20\nslack_webhook_url = "https://hooks.slack.com/services/T/B/X"\n')
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert set(info.value.errors) == {"pow_dificulty", "slack_webhook_url"}
    assert "secrets store" in info.value.errors["slack_webhook_url"]
    assert "hooks.slack.com" not in str(info.value)


def test_toml_syntax_error_names_the_file() -> None:
    target = write_toml("pow_difficulty = = 3\n")
    with pytest.raises(SettingsError, match="is not valid TOML") as info:
        load_settings()
    assert str(target) in str(info.value)


def test_fault_plan_must_exist(tmp_path: Path) -> None:
    plan = tmp_path / "faults.toml"
    plan.write_text("")
    assert validate_candidate({"fault_plan": str(plan)}) == {}
    assert updated(load_settings(), fault_plan=str(plan)).fault_plan == plan


def test_updates_are_all_or_nothing() -> None:
    s = load_settings()
    with pytest.raises(SettingsError) as info:
        updated(s, max_retries=5, pow_difficulty=40)
    assert set(info.value.errors) == {"pow_difficulty"}
    assert s.max_retries == 3
    with pytest.raises(Exception, match="frozen"):
        s.max_retries = 5
    assert updated(s, max_retries=5).max_retries == 5


def test_validate_candidate_ignores_env_and_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("R3MES_POW_DIFFICULTY", "99")
    write_toml("max_retries = 99\n")
    assert validate_candidate({"pow_difficulty": 18}) == {}
    assert env_overrides() == {"pow_difficulty": "R3MES_POW_DIFFICULTY"}


# -- saving ------------------------------------------------------------------------------------


def test_save_round_trips_only_non_defaults() -> None:
    s = updated(load_settings(), pow_difficulty=22, chain_rpc_urls=("http://127.0.0.1:8545",))
    target = save_settings(s)
    assert target == paths().settings_file
    data = tomllib.loads(target.read_text())
    assert data == {"pow_difficulty": 22, "chain_rpc_urls": ["http://127.0.0.1:8545"]}
    assert load_settings() == s
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    save_settings(updated(s, pow_difficulty=20))  # back to the default: key removed
    assert "pow_difficulty" not in tomllib.loads(target.read_text())


def test_save_never_persists_an_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    write_toml("pow_difficulty = 24\n")
    monkeypatch.setenv("R3MES_POW_DIFFICULTY", "30")
    monkeypatch.setenv("R3MES_MAX_RETRIES", "7")
    s = load_settings()
    save_settings(updated(s, max_active_transactions=3))
    data = tomllib.loads(paths().settings_file.read_text())
    assert data == {"pow_difficulty": 24, "max_active_transactions": 3}


def test_save_writes_no_secret(tmp_path: Path) -> None:
    from r3mes_desktop.support.secrets import SLACK_WEBHOOK_URL, SMTP_PASSWORD, SecretsStore

    store = SecretsStore()
    store.set(SLACK_WEBHOOK_URL, "https://hooks.slack.com/services/T0/B0/sekrit-hook")
    store.set(SMTP_PASSWORD, "hunter2-password")
    s = updated(load_settings(), slack_enabled=True, smtp_username="miner", smtp_host="mail")
    text = save_settings(s).read_text()
    assert "sekrit" not in text and "hunter2" not in text
    assert not {"slack_webhook_url", "smtp_password", "api_token"} & set(tomllib.loads(text))


def test_atomic_write_leaves_the_old_file_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "settings.toml"
    target.write_text("pow_difficulty = 24\n")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        write_atomic(target, b"pow_difficulty = 30\n")
    assert target.read_text() == "pow_difficulty = 24\n"
    assert [p.name for p in tmp_path.iterdir()] == ["settings.toml"]


# -- paths and consumers -----------------------------------------------------------------------


def test_paths_follow_env_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("R3MES_CONFIG_DIR", str(tmp_path / "c"))
    monkeypatch.setenv("R3MES_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.delenv("R3MES_LOG_DIR", raising=False)
    monkeypatch.delenv("R3MES_CACHE_DIR", raising=False)
    p = paths()
    assert p.settings_file == tmp_path / "c" / "settings.toml"
    assert p.secrets_file == tmp_path / "d" / "secrets.json"
    assert (p.log_dir, p.cache_dir) == (tmp_path / "d" / "logs", tmp_path / "d" / "cache")
    monkeypatch.setenv("R3MES_LOG_DIR", str(tmp_path / "l"))
    assert paths().log_dir == tmp_path / "l"
    monkeypatch.delenv("R3MES_DATA_DIR")
    monkeypatch.delenv("R3MES_LOG_DIR")
    assert "r3mes-desktop" in str(paths().data_dir)
    assert "r3mes-desktop" in str(paths().cache_dir)


def test_policies_are_built_from_settings() -> None:
    s = updated(
        Settings(),
        max_retries=4,
        retry_wait="linear",
        retry_initial_delay=2,
        breaker_failure_threshold=2,
    )
    assert RetryPolicy.from_settings(s).delays() == [2, 4, 6, 8]
    registry = BreakerRegistry.from_settings(s)
    assert registry.get("ipfs").config.failure_threshold == 2


def test_governor_lists_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("R3MES_GOVERNOR_PAUSE_WHILE", "steam, zoom")
    monkeypatch.setenv("R3MES_GOVERNOR_WINDOWS", "Sat:09:00-17:00,sun:22:00-06:00")
    s = load_settings()
    assert s.governor_pause_while == ("steam", "zoom")
    assert s.governor_windows == ("sat:09:00-17:00", "sun:22:00-06:00")


@pytest.mark.parametrize(
    ("legacy", "devices"),
    [("auto", ()), ("cpu", ("cpu",)), ("cuda", ("cuda:0",)), ("cuda:1", ("cuda:1",))],
)
def test_a_settings_file_naming_training_device_still_loads(legacy: str, devices: Any) -> None:
    """Files written before devices were detected name one `training_device`."""
    write_toml(f"training_device = '{legacy}'\n")
    assert load_settings().mining_devices == devices
