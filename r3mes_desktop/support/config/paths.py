"""Where the app keeps its files: platformdirs, with env overrides for tests and extra rigs.

R3MES_CONFIG_DIR, R3MES_DATA_DIR, R3MES_LOG_DIR and R3MES_CACHE_DIR each replace one
directory. When only R3MES_DATA_DIR is set, logs and cache go under it too, so one variable
is enough to run a second, fully separate rig on the same account.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

APP_NAME = "r3mes-desktop"
SETTINGS_FILE = "settings.toml"
SECRETS_FILE = "secrets.json"


@dataclass(frozen=True)
class AppPaths:
    config_dir: Path
    data_dir: Path
    log_dir: Path
    cache_dir: Path

    @property
    def settings_file(self) -> Path:
        return self.config_dir / SETTINGS_FILE

    @property
    def secrets_file(self) -> Path:
        return self.data_dir / SECRETS_FILE


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value).expanduser() if value else None


def paths() -> AppPaths:
    """The app's directories now (env is read on every call; nothing is created)."""
    data_override = _env_path("R3MES_DATA_DIR")
    data_dir = data_override or Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))
    config_dir = _env_path("R3MES_CONFIG_DIR") or Path(
        platformdirs.user_config_dir(APP_NAME, appauthor=False)
    )
    log_dir = _env_path("R3MES_LOG_DIR") or (
        data_override / "logs"
        if data_override
        else Path(platformdirs.user_log_dir(APP_NAME, appauthor=False))
    )
    cache_dir = _env_path("R3MES_CACHE_DIR") or (
        data_override / "cache"
        if data_override
        else Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))
    )
    return AppPaths(config_dir=config_dir, data_dir=data_dir, log_dir=log_dir, cache_dir=cache_dir)
