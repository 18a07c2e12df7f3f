"""The typed settings object: fields, accepted ranges and cross-field rules.

One flat namespace, so the TOML key, the attribute and the env var (R3MES_ + upper-case
name) are the same word everywhere. Secrets (webhook URL, SMTP password, API token) are not
fields at all: they live in `r3mes_desktop.support.secrets`, so no code path can write one
to the TOML file. Loading, saving and error messages are in `config.store`.
"""

from __future__ import annotations

import ipaddress
import json
import re
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from r3mes_desktop.core.governor import Window

ENV_PREFIX = "R3MES_"
_DEVICE = re.compile(r"^(cpu|cuda:\d{1,2}|mps)$")
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_URL = re.compile(r"^(https?|wss?)://[^\s/?#]+(?:[/?#]\S*)?$", re.IGNORECASE)


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def _f(default: Any, accepted: str, **constraints: Any) -> Any:
    """A field whose error messages say what is accepted."""
    return Field(default, json_schema_extra={"accepted": accepted}, **constraints)


@dataclass(frozen=True)
class _Sources:
    toml_file: Path | None = None
    use_env: bool = True


_SOURCES: ContextVar[_Sources | None] = ContextVar("r3mes_settings_sources", default=None)
"""Which sources the next Settings() reads; set by config.store around construction."""


def _split_list(value: Any) -> Any:
    """Env values for list fields: a JSON list or comma-separated text."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


StrList = Annotated[tuple[str, ...], NoDecode]


class Settings(BaseSettings):
    """Everything the user can set. Immutable: a change builds (and validates) a new one."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        case_sensitive=False,
        extra="forbid",
        frozen=True,
        validate_default=True,
    )

    # transactions and retries (R3MES_TRANSACTION_TIMEOUT, R3MES_MAX_RETRIES, ... as documented)
    transaction_timeout: float = _f(300.0, "10–86400 seconds", ge=10, le=86400)
    max_retries: int = _f(3, "0–20", ge=0, le=20)
    retry_initial_delay: float = _f(1.0, "0–3600 seconds", ge=0, le=3600)
    retry_max_delay: float = _f(60.0, "0–3600 seconds", ge=0, le=3600)
    retry_backoff_factor: float = _f(2.0, "1–10", ge=1, le=10)
    retry_wait: Literal["exponential", "linear", "fixed", "fibonacci"] = _f(
        "exponential", "exponential, linear, fixed or fibonacci"
    )
    retry_jitter: bool = _f(False, "true or false")
    max_gradient_size_mb: int = _f(100, "1–10240 MB", ge=1, le=10240)
    max_active_transactions: int = _f(10, "1–100", ge=1, le=100)
    pow_difficulty: int = _f(20, "16–32", ge=16, le=32)
    stale_threshold: float = _f(600.0, "60–604800 seconds", ge=60, le=604800)
    call_timeout: float = _f(30.0, "1–3600 seconds", ge=1, le=3600)

    # endpoints: empty means the embedded devnet
    chain_rpc_urls: StrList = _f((), "a list of http(s):// or ws(s):// URLs; empty = devnet")
    chain_id: int | None = _f(None, "a positive integer or empty", ge=1)
    ipfs_api_address: str = _f(
        "", "a multiaddr (/ip4/127.0.0.1/tcp/5001) or http(s):// URL; empty = devnet"
    )
    contract_address: str = _f("", "0x followed by 40 hex digits; empty = devnet")
    # the joined network file's name, so the miner can say where it is connected
    network_name: str = _f("", "up to 100 characters; empty = unnamed", max_length=100)

    # training: where and with how much of the machine (devices are detected: core.devices)
    mining_devices: StrList = _f(
        (), "a list of devices (cpu, cuda:N, mps); empty = every GPU found, else the CPU"
    )
    training_threads: int = _f(0, "0 = all cores but one, or 1–256 threads", ge=0, le=256)
    pow_threads: int = _f(
        0, "0 = auto (all cores on a CPU rig, the cores GPUs leave), or 1–256", ge=0, le=256
    )
    process_priority: Literal["normal", "low", "idle"] = _f("low", "normal, low or idle")
    memory_budget_mb: int = _f(0, "0 = no budget, or 256–1048576 MB", ge=0, le=1_048_576)
    gpu_vram_cap_mb: int = _f(0, "0 = no cap, or 256–1048576 MB per GPU", ge=0, le=1_048_576)
    gpu_power_target_w: float = _f(0.0, "0 = off, or 30–1500 W per GPU", ge=0, le=1500)
    start_at_login: bool = _f(False, "true or false")
    # Model size of the devnet's rounds, and of a real round that names none (mining presets).
    model_preset: Literal["tiny", "default", "large"] = _f("default", "tiny, default or large")
    checkpoint_interval: int = _f(50, "1–100000 steps", ge=1, le=100000)
    # the verified cache of fetched model versions and datasets (largest file it takes too)
    model_cache_mb: int = _f(512, "16–1048576 MB", ge=16, le=1_048_576)

    # the resource governor (core.governor): when mining may run; every default mines always
    governor_idle_minutes: float = _f(
        0.0, "0–1440 minutes without input before mining; 0 = also while in use", ge=0, le=1440
    )
    governor_not_on_battery: bool = _f(False, "true or false")
    governor_battery_floor: float = _f(0.0, "0–100 % on battery; 0 = no floor", ge=0, le=100)
    governor_max_other_cpu: float = _f(
        100.0, "1–100 % of the CPU used by other programs; 100 = no limit", ge=1, le=100
    )
    governor_pause_while: StrList = _f((), "a list of program names (e.g. steam, zoom)")
    governor_windows: StrList = _f(
        (), "a list of DAY:HH:MM-HH:MM windows (e.g. sat:09:00-17:30); empty = any time"
    )
    governor_gpu_temp_limit: float = _f(0.0, "0 = off, or 40–100 °C", ge=0, le=100)
    governor_gpu_temp_delta: float = _f(6.0, "1–30 °C below the limit to resume", ge=1, le=30)

    # circuit breakers (one per service, same knobs)
    breaker_window_size: int = _f(10, "1–1000 calls", ge=1, le=1000)
    breaker_failure_threshold: int = _f(5, "1–1000 failures", ge=1, le=1000)
    breaker_open_timeout: float = _f(30.0, "1–3600 seconds", ge=1, le=3600)
    breaker_half_open_max_calls: int = _f(1, "1–100", ge=1, le=100)
    breaker_success_threshold: int = _f(2, "1–100", ge=1, le=100)

    # local monitoring API
    api_enabled: bool = _f(False, "true or false")
    api_host: str = _f("127.0.0.1", "an IP address or localhost")
    api_port: int = _f(8080, "1024–65535", ge=1024, le=65535)
    api_protect_reads: bool = _f(False, "true or false")  # token on GET endpoints too

    # notifications (webhook URL and SMTP password live in the secrets store)
    notify_tray: bool = _f(True, "true or false")
    notify_min_severity: Literal["info", "warning", "error"] = _f(
        "warning", "info, warning or error"
    )
    # a committed submission with no validator's verdict after this many blocks is flagged
    verdict_overdue_blocks: int = _f(50, "1–1000000 blocks", ge=1, le=1_000_000)
    slack_enabled: bool = _f(False, "true or false")
    email_enabled: bool = _f(False, "true or false")
    smtp_host: str = _f("", "a host name")
    smtp_port: int = _f(587, "1–65535", ge=1, le=65535)
    smtp_starttls: bool = _f(True, "true or false")
    smtp_username: str = _f("", "any text")
    email_from: str = _f("", "an e-mail address")
    email_to: StrList = _f((), "a list of e-mail addresses")

    # fault injection for demos and tests: off unless a plan file is named
    fault_plan: Path | None = _f(None, "the path of an existing fault plan file, or empty")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Precedence: explicit values > env vars > settings.toml > defaults."""
        sources = _SOURCES.get() or _Sources()
        chosen = [init_settings]
        if sources.use_env:
            chosen.append(env_settings)
        if sources.toml_file is not None:
            chosen.append(TomlConfigSettingsSource(settings_cls, toml_file=sources.toml_file))
        return tuple(chosen)

    # -- field rules ----------------------------------------------------------------------------

    @field_validator(
        "chain_rpc_urls",
        "email_to",
        "governor_pause_while",
        "governor_windows",
        "mining_devices",
        mode="before",
    )
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("chain_id", "fault_plan", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("chain_rpc_urls")
    @classmethod
    def _urls(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for url in value:
            if not _URL.match(url):
                raise ValueError("not an http(s):// or ws(s):// URL")
        return value

    @field_validator("ipfs_api_address")
    @classmethod
    def _ipfs(cls, value: str) -> str:
        value = value.strip()
        if value and not (value.startswith("/") or _URL.match(value)):
            raise ValueError("not a multiaddr or URL")
        return value

    @field_validator("contract_address")
    @classmethod
    def _contract(cls, value: str) -> str:
        value = value.strip()
        if value and not _ADDRESS.match(value):
            raise ValueError("not a contract address")
        return value

    @model_validator(mode="before")
    @classmethod
    def _legacy_device(cls, data: Any) -> Any:
        """A settings file from before device detection names one `training_device`; it
        becomes the device list (auto: empty), so an upgrade loses nothing."""
        if isinstance(data, dict) and "training_device" in data:
            data = dict(data)
            legacy = str(data.pop("training_device")).strip().lower()
            if "mining_devices" not in data:
                named = {"": [], "auto": [], "cuda": ["cuda:0"]}
                data["mining_devices"] = named.get(legacy, [legacy])
        return data

    @field_validator("mining_devices")
    @classmethod
    def _devices(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        devices = tuple(text.strip().lower() for text in value)
        for device in devices:
            if not _DEVICE.match(device):
                raise ValueError(f"unknown device {device!r}")
        if len(set(devices)) != len(devices):
            raise ValueError("a device is listed twice")
        if "cpu" in devices and len(devices) > 1:
            raise ValueError("the CPU mines alone: list GPUs, or the CPU")
        return devices

    @field_validator("memory_budget_mb", "gpu_vram_cap_mb")
    @classmethod
    def _megabytes(cls, value: int) -> int:
        if value and value < 256:
            raise ValueError("must be 0 (none) or at least 256 MB")
        return value

    @field_validator("gpu_power_target_w")
    @classmethod
    def _power(cls, value: float) -> float:
        if value and value < 30:
            raise ValueError("must be 0 (off) or 30–1500 W")
        return value

    @field_validator("governor_windows")
    @classmethod
    def _windows(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for text in value:
            Window.parse(text)  # ValueError says the expected form
        return tuple(text.strip().lower() for text in value)

    @field_validator("governor_pause_while")
    @classmethod
    def _programs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        names = tuple(name.strip() for name in value)
        if any(not name or len(name) > 255 for name in names):
            raise ValueError("program names must be 1–255 characters")
        return names

    @field_validator("governor_gpu_temp_limit")
    @classmethod
    def _temp_limit(cls, value: float) -> float:
        if value and value < 40:
            raise ValueError("must be 0 (off) or 40–100 °C")
        return value

    @field_validator("api_host")
    @classmethod
    def _host(cls, value: str) -> str:
        value = value.strip()
        if value != "localhost":
            ipaddress.ip_address(value)  # ValueError names the problem
        return value

    @field_validator("email_from")
    @classmethod
    def _sender(cls, value: str) -> str:
        if value and not _EMAIL.match(value):
            raise ValueError("not an e-mail address")
        return value

    @field_validator("email_to")
    @classmethod
    def _recipients(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for address in value:
            if not _EMAIL.match(address):
                raise ValueError("not an e-mail address")
        return value

    @field_validator("fault_plan")
    @classmethod
    def _plan(cls, value: Path | None) -> Path | None:
        if value is not None and not value.expanduser().is_file():
            raise ValueError("no such file")
        return value.expanduser() if value is not None else None

    # -- rules between fields (field validators, so they are reported with all the others) -----

    @field_validator("retry_max_delay")
    @classmethod
    def _max_delay(cls, value: float, info: ValidationInfo) -> float:
        initial = info.data.get("retry_initial_delay")
        if initial is not None and value < initial:
            raise ValueError(f"must be ≥ retry_initial_delay = {initial:g}")
        return value

    @field_validator("breaker_failure_threshold")
    @classmethod
    def _threshold(cls, value: int, info: ValidationInfo) -> int:
        window = info.data.get("breaker_window_size")
        if window is not None and value > window:
            raise ValueError(f"must be ≤ breaker_window_size = {window}")
        return value

    @field_validator("smtp_host", "email_from", "email_to")
    @classmethod
    def _email_needs(cls, value: Any, info: ValidationInfo) -> Any:
        if info.data.get("email_enabled") and not value:
            raise ValueError("required when email_enabled is true")
        return value

    @property
    def uses_devnet(self) -> bool:
        """No chain endpoint configured: the app starts its embedded devnet."""
        return not self.chain_rpc_urls


FIELD_NAMES: tuple[str, ...] = tuple(Settings.model_fields)


def accepted(field: str) -> str:
    """The accepted range/values of a field, as shown in error messages and tooltips."""
    extra = Settings.model_fields[field].json_schema_extra
    return str(extra.get("accepted", "")) if isinstance(extra, dict) else ""
