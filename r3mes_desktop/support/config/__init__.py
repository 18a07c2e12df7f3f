"""Settings and app directories (defaults < settings.toml < R3MES_* env vars).

from r3mes_desktop.support.config import load_settings, paths
settings = load_settings()          # raises SettingsError listing every problem
errors = validate_candidate({...})  # field -> message, for inline validation
"""

from r3mes_desktop.support.config.paths import APP_NAME, AppPaths, paths
from r3mes_desktop.support.config.settings import (
    ENV_PREFIX,
    FIELD_NAMES,
    Settings,
    accepted,
    env_name,
)
from r3mes_desktop.support.config.store import (
    SettingsError,
    env_overrides,
    load_settings,
    save_settings,
    updated,
    validate_candidate,
    write_atomic,
)

__all__ = [
    "APP_NAME",
    "ENV_PREFIX",
    "FIELD_NAMES",
    "AppPaths",
    "Settings",
    "SettingsError",
    "accepted",
    "env_name",
    "env_overrides",
    "load_settings",
    "paths",
    "save_settings",
    "updated",
    "validate_candidate",
    "write_atomic",
]
