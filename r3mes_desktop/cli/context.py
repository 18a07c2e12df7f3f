"""What every command gets: paths, settings (loaded on first use), output, journal, lock."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from r3mes_desktop.app.instance_lock import InstanceLock
from r3mes_desktop.cli.exit_codes import CliError, ExitCode
from r3mes_desktop.cli.journal_view import JournalView
from r3mes_desktop.cli.output import Output
from r3mes_desktop.support.config import AppPaths, Settings, SettingsError, load_settings, paths

JOURNAL_FILE = "journal.sqlite"
KEYS_DIR = "keys"


@dataclass
class CliContext:
    out: Output
    paths: AppPaths = field(default_factory=paths)
    _settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            try:
                self._settings = load_settings()
            except SettingsError as exc:
                raise CliError(f"settings invalid: {exc}", ExitCode.CONFIG) from None
        return self._settings

    def settings_dump(self) -> dict[str, Any]:
        try:
            return self.settings.model_dump(mode="json")
        except CliError as exc:
            return {"error": exc.message}

    @property
    def journal_path(self) -> Path:
        return self.paths.data_dir / JOURNAL_FILE

    def journal_view(self) -> JournalView:
        return JournalView(self.journal_path)

    def lock(self) -> InstanceLock:
        return InstanceLock(self.paths.data_dir)

    def miner_running(self) -> bool:
        return self.lock().is_held_elsewhere()

    @property
    def keys_dir(self) -> Path:
        return self.paths.data_dir / KEYS_DIR

    def keystore_address(self) -> str | None:
        from r3mes_desktop.adapters.chain.keystore import Keystore

        keystore = Keystore(self.keys_dir)
        return keystore.address() if keystore.exists() else None
