"""Loading, validating and saving settings: all-or-nothing, with messages people can act on.

Every problem is reported at once, each naming the field, its env var, the value given and
what is accepted, e.g. "pow_difficulty (R3MES_POW_DIFFICULTY) = 40 is out of range:
accepted 16–32". A load or update that fails changes nothing; a save writes a temp file in
the same directory, fsyncs it and renames it over the old one.
"""

from __future__ import annotations

import contextlib
import os
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pydantic
import tomli_w

from r3mes_desktop.core.artifacts import write_atomic_sync
from r3mes_desktop.support.config.paths import paths
from r3mes_desktop.support.config.settings import (
    _SOURCES,
    ENV_PREFIX,
    FIELD_NAMES,
    Settings,
    _Sources,
    _split_list,
    accepted,
    env_name,
)

_RANGE_ERRORS = frozenset({"greater_than", "greater_than_equal", "less_than", "less_than_equal"})
_URL_FIELDS = frozenset({"chain_rpc_urls", "ipfs_api_address"})
FORBIDDEN_KEYS = frozenset({"slack_webhook_url", "smtp_password", "api_token", "private_key"})
"""Secret names that must never appear in settings.toml (they belong in the secrets store)."""


class SettingsError(ValueError):
    """Invalid settings; `errors` maps each field (or file) to its message."""

    def __init__(self, errors: Mapping[str, str]) -> None:
        self.errors = dict(errors)
        super().__init__("invalid settings:\n" + "\n".join(f"- {m}" for m in self.errors.values()))


def _redact_url(text: str) -> str:
    parts = urlsplit(text)
    if not (parts.scheme and parts.hostname):
        return text
    port = f":{parts.port}" if parts.port else ""
    more = "/…" if (parts.path.strip("/") or parts.query or parts.username) else ""
    return f"{parts.scheme}://{parts.hostname}{port}{more}"


def _shown(field: str, value: Any) -> str:
    """The value as quoted in a message; URLs lose path, query and credentials."""
    if field in _URL_FIELDS:
        if field == "chain_rpc_urls":
            items = _split_list(value) if isinstance(value, str) else value
            if isinstance(items, list | tuple):
                return "[" + ", ".join(_redact_url(str(item)) for item in items) + "]"
        return _redact_url(str(value))
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, tuple):
        return repr(list(value))
    return repr(value)


def errors_from(exc: pydantic.ValidationError) -> dict[str, str]:
    """pydantic's errors as field → message (every field, not just the first)."""
    errors: dict[str, str] = {}
    for err in exc.errors():
        loc = err.get("loc") or ()
        field = str(loc[0]) if loc else ""
        if field in errors:
            continue
        if err["type"] == "extra_forbidden":
            kind = "a secret: use the secrets store" if field in FORBIDDEN_KEYS else "unknown"
            errors[field] = f"{field!r} is not a setting ({kind})"
            continue
        if field not in FIELD_NAMES:
            errors[field or "settings"] = err["msg"]
            continue
        if err["type"] in _RANGE_ERRORS:
            problem = "is out of range"
        elif err["type"] == "value_error":
            problem = f"is invalid ({(err.get('ctx') or {}).get('error', err['msg'])})"
        else:
            problem = "is invalid"
        shown = _shown(field, err.get("input"))
        errors[field] = (
            f"{field} ({env_name(field)}) = {shown} {problem}: accepted {accepted(field)}"
        )
    return errors


@contextlib.contextmanager
def _sources(toml_file: Path | None, use_env: bool) -> Iterator[None]:
    token = _SOURCES.set(_Sources(toml_file=toml_file, use_env=use_env))
    try:
        yield
    finally:
        _SOURCES.reset(token)


def _read_toml(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError({str(path): f"{path} is not valid TOML: {exc}"}) from exc


def load_settings(path: Path | None = None, *, use_env: bool = True) -> Settings:
    """defaults < settings.toml (`path` or the config dir's) < R3MES_* env vars.

    Raises SettingsError listing every problem; nothing is returned half-valid.
    """
    toml_file = path if path is not None else paths().settings_file
    _read_toml(toml_file)  # a syntax error gets its own message, naming the file
    try:
        with _sources(toml_file, use_env):
            return Settings()
    except pydantic.ValidationError as exc:
        raise SettingsError(errors_from(exc)) from None


def validate_candidate(values: Mapping[str, Any]) -> dict[str, str]:
    """field → message for a candidate (e.g. the settings dialog); empty when valid.

    Only `values` and the defaults are used: no env var, no file.
    """
    try:
        with _sources(None, use_env=False):
            Settings(**dict(values))
    except pydantic.ValidationError as exc:
        return errors_from(exc)
    return {}


def updated(settings: Settings, **changes: Any) -> Settings:
    """A new Settings with `changes` applied and everything re-validated (else SettingsError)."""
    values = settings.model_dump()
    values.update(changes)
    errors = validate_candidate(values)
    if errors:
        raise SettingsError(errors)
    with _sources(None, use_env=False):
        return Settings(**values)


def env_overrides() -> dict[str, str]:
    """field → env var for fields the environment sets now (the dialog shows them locked)."""
    present = {key.upper() for key in os.environ if key.upper().startswith(ENV_PREFIX)}
    return {field: env_name(field) for field in FIELD_NAMES if env_name(field) in present}


def _toml_value(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    return value


def save_settings(settings: Settings, path: Path | None = None) -> Path:
    """Write the non-default, non-env values atomically; returns the file written.

    Fields the environment sets now keep what the file had, so a temporary env override
    is never persisted. Secrets are not fields, and the file is checked for their names.
    """
    target = path if path is not None else paths().settings_file
    document = {k: v for k, v in _read_toml(target).items() if k in FIELD_NAMES}
    locked = env_overrides()
    defaults = Settings.model_fields
    for field in FIELD_NAMES:
        if field in locked:
            continue
        value = getattr(settings, field)
        if value is None or value == defaults[field].default:
            document.pop(field, None)
        else:
            document[field] = _toml_value(value)
    leaked = FORBIDDEN_KEYS & set(document)
    if leaked:  # unreachable through Settings; a guard against future fields
        raise SettingsError({name: f"{name} is a secret and cannot be saved" for name in leaked})
    write_atomic(target, tomli_w.dumps(document).encode("utf-8"))
    return target


def write_atomic(target: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Readers see the old file or the new one, never half (core.artifacts does the work)."""
    write_atomic_sync(target, data, mode=mode)
